-- keycard schema v3 (PostgreSQL): keycard's own JWT signing keys. Keep in step with sqlite/0003.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    sealed        BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT,
    publish_until BIGINT
);
