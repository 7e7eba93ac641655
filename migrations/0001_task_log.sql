-- The append-only task event log: the source of truth.
CREATE TABLE task_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
    task_id TEXT    NOT NULL,
    type    TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    payload TEXT    NOT NULL                    -- the event as JSON, previews stripped
);
CREATE INDEX task_events_task_seq ON task_events (task_id, seq);

-- The read model FooocusAPI clients know (fooocus-facts §1.11), plus `error`.
-- Rebuilt from task_events by `fooocus-es replay`; `id` is the seq of the task's TaskQueued
-- event so a rebuild gives the same ids.
CREATE TABLE generate_record (
    id             INTEGER PRIMARY KEY,
    task_id        VARCHAR(255) NOT NULL UNIQUE,
    req_params     JSON NOT NULL,
    in_queue_mills INTEGER,
    start_mills    INTEGER,
    finish_mills   INTEGER,
    task_status    VARCHAR(255),
    progress       FLOAT,
    webhook_url    VARCHAR(255),
    result         JSON,
    error          JSON
);
CREATE INDEX generate_record_in_queue ON generate_record (in_queue_mills);
