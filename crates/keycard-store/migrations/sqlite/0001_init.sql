-- keycard schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql.
CREATE TABLE subjects (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,              -- 'service' | 'user'
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

-- Every credential kind: lookup is a keyed hash (API keys) or a public handle; never a secret.
CREATE TABLE credentials (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,             -- 'api_key'
    subject      TEXT NOT NULL REFERENCES subjects(name),
    lookup       BLOB NOT NULL UNIQUE,
    name         TEXT,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    rotated_from TEXT,
    last_used_at INTEGER
);
CREATE INDEX credentials_subject ON credentials(subject);

-- The change feed. feed_head is bumped first in every writing transaction: its row lock
-- makes revisions commit in order on PostgreSQL too, so a follower never skips one.
CREATE TABLE feed_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO feed_head (id, revision) VALUES (1, 0);

CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,                 -- 'credential' | 'subject'
    ref      TEXT NOT NULL,
    at       INTEGER NOT NULL
);

-- Append-only; rowid order is insertion order (no AUTOINCREMENT: nothing is deleted
-- and re-used ids would not matter). One index: most reads are by time.
CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    request_id    TEXT NOT NULL,
    route         TEXT,
    method        TEXT,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    subject       TEXT,
    credential_id TEXT,
    ip            TEXT
);
CREATE INDEX audit_events_ts ON audit_events(ts_ms);
