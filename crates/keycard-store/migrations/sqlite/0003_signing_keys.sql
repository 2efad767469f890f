-- keycard schema v3 (SQLite): keycard's own JWT signing keys. Keep in step with postgres/0003.
-- sealed: PKCS#8 DER, AES-GCM-sealed with the master key. The current key is the newest
-- without retired_at; a retired key stays published until publish_until.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,
    publish_until INTEGER
);
