-- keycard schema v10: login sessions kept in the store, so that they can be ended. Keep in
-- step with postgres/0010_sessions.sql. The browser holds a random session secret; the store
-- holds its keyed hash and a public id that codes and grants name, so that ending a
-- session revokes what was granted through it.
CREATE TABLE oauth_sessions (
    session_hash BLOB PRIMARY KEY,
    session_id   TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    -- A MAC of the credentials the user signed in with (password id, TOTP seed): a
    -- session whose user's credentials have changed since is no session.
    credential_tag TEXT NOT NULL,
    auth_time    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE INDEX oauth_sessions_subject ON oauth_sessions(subject);

ALTER TABLE oauth_codes ADD COLUMN session_id TEXT;
ALTER TABLE oauth_grants ADD COLUMN session_id TEXT;
CREATE INDEX oauth_grants_subject ON oauth_grants(subject);
