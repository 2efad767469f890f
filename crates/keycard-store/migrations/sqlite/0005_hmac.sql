-- keycard schema v5 (SQLite): HMAC request-signing keys (RFC 9421). Keep in step with
-- postgres/0005_hmac.sql. An HMAC key is a credential of kind 'hmac': `lookup` is the keyed
-- hash of its public `key_id` (the RFC 9421 keyid), `sealed` its secret under the master key
-- (the server must read it back to verify).
ALTER TABLE credentials ADD COLUMN key_id TEXT;
ALTER TABLE credentials ADD COLUMN sealed BLOB;
