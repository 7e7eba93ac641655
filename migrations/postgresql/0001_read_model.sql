-- The read model in PostgreSQL (`--read-model postgresql://...`), shared by a fleet's API nodes:
-- generate_record and consumer_positions as the SQLite migrations 0001-0005 leave them. The JSON
-- columns are TEXT holding the same JSON text SQLite stores (projections/record_changes.py writes
-- it), and no length limits: SQLite enforces none, and a row must fit wherever it fits there.
CREATE TABLE generate_record (
    id             BIGINT PRIMARY KEY,          -- the seq of the task's TaskQueued: a rebuild gives the same ids
    task_id        TEXT   NOT NULL UNIQUE,
    req_params     TEXT   NOT NULL,             -- JSON
    in_queue_mills BIGINT,
    start_mills    BIGINT,
    finish_mills   BIGINT,
    task_status    TEXT,
    progress       DOUBLE PRECISION,
    webhook_url    TEXT,
    result         TEXT,                        -- JSON
    error          TEXT,                        -- JSON
    notes          TEXT,                        -- JSON
    wire           TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX generate_record_in_queue ON generate_record (in_queue_mills);
-- History pages (ended tasks, newest first) skip over this partial index instead of the rows.
CREATE INDEX generate_record_ended ON generate_record (id) WHERE finish_mills IS NOT NULL;

-- Where the table stands in the log. Every node's apply locks this row (SELECT ... FOR UPDATE) and
-- skips what is at or below it, so nodes applying the same events one after another write them once.
CREATE TABLE consumer_positions (
    name TEXT   PRIMARY KEY,
    seq  BIGINT NOT NULL
);
INSERT INTO consumer_positions (name, seq) VALUES ('generate_record', 0);
