-- keycard schema v1 (PostgreSQL). Keep in step with migrations/sqlite/0001_init.sql.
CREATE TABLE subjects (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

CREATE TABLE credentials (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL REFERENCES subjects(name),
    lookup       BYTEA NOT NULL UNIQUE,
    name         TEXT,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    rotated_from TEXT,
    last_used_at BIGINT
);
CREATE INDEX credentials_subject ON credentials(subject);

CREATE TABLE feed_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO feed_head (id, revision) VALUES (1, 0);

CREATE TABLE changes (
    revision BIGINT PRIMARY KEY,
    kind     TEXT NOT NULL,
    ref      TEXT NOT NULL,
    at       BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id            BIGSERIAL PRIMARY KEY,
    ts_ms         BIGINT NOT NULL,
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
