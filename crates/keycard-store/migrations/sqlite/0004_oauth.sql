-- keycard schema v4 (SQLite): the OAuth 2.0 authorization server. Keep in step with
-- postgres/0004_oauth.sql. Secrets (client secrets, codes, refresh tokens) are stored as
-- keyed hashes only; TOTP seeds sealed with the master key.
ALTER TABLE subjects ADD COLUMN totp_sealed BLOB;
ALTER TABLE subjects ADD COLUMN totp_last_step INTEGER;

CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    secret_hash   BLOB,                     -- NULL for public clients
    auth_method   TEXT NOT NULL,            -- client_secret_basic | client_secret_post | none
    redirect_uris TEXT NOT NULL,            -- one per line
    grants        TEXT NOT NULL,            -- space-separated
    scopes        TEXT NOT NULL,            -- space-separated: the most it may ask for
    first_party   BOOLEAN NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

-- A grant: everything issued from one authorization code, through every refresh.
CREATE TABLE oauth_grants (
    grant_id   TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    audience   TEXT NOT NULL,
    auth_time  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,            -- the refresh tokens' absolute lifetime
    revoked_at INTEGER
);
CREATE INDEX oauth_grants_client ON oauth_grants(client_id);

CREATE TABLE oauth_codes (
    code_hash      BLOB PRIMARY KEY,
    grant_id       TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    audience       TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    auth_time      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);

CREATE TABLE oauth_refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens(grant_id);

-- Access tokens issued under a grant, so revoking the grant revokes them.
CREATE TABLE oauth_grant_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_grant_tokens_grant ON oauth_grant_tokens(grant_id);

-- Access tokens revoked before their expiry; kept until then.
CREATE TABLE oauth_revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);

CREATE TABLE oauth_consents (
    subject    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (subject, client_id)
);
