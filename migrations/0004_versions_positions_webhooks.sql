-- Per-task versions: an event's 1-based ordinal among its task's events. (task_id, version) is
-- unique, so two writers that read the same version cannot both append (optimistic concurrency).
ALTER TABLE task_events ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
UPDATE task_events SET version = numbered.version
FROM (SELECT seq, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY seq) AS version FROM task_events) AS numbered
WHERE task_events.seq = numbered.seq;
CREATE UNIQUE INDEX task_events_task_version ON task_events (task_id, version);

-- Where each consumer of the log stands: the seq it has applied, written in the same
-- transaction as what it applied. Rows older than this migration were applied in-transaction.
CREATE TABLE consumer_positions (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
INSERT INTO consumer_positions (name, seq)
SELECT 'generate_record', COALESCE(MAX(seq), 0) FROM task_events
UNION ALL
SELECT 'webhooks', COALESCE(MAX(seq), 0) FROM task_events;

-- The webhook outbox: one row per ended task that has a webhook URL, keyed by its terminal event.
CREATE TABLE webhook_deliveries (
    seq         INTEGER PRIMARY KEY,           -- the terminal event's seq
    task_id     TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    state       TEXT    NOT NULL,              -- pending | delivered | failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,                       -- the receiver's HTTP status, NULL when none answered
    last_error  TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state);
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,              -- webhook_deliveries.seq
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT
);
CREATE INDEX webhook_attempts_seq ON webhook_attempts (seq);
