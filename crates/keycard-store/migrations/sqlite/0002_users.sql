-- keycard schema v2 (SQLite): users with passwords. Keep in step with postgres/0002_users.sql.
-- A user is a subject of kind 'user'. password_hash is an argon2id PHC string; digest_sealed
-- the AES-GCM-sealed RFC 7616 HA1 values (only for users added with --digest);
-- password_id names the current password (X-Keycard-Credential) and changes with it.
ALTER TABLE subjects ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN password_id TEXT;
ALTER TABLE subjects ADD COLUMN password_hash TEXT;
ALTER TABLE subjects ADD COLUMN digest_sealed BLOB;
ALTER TABLE subjects ADD COLUMN password_changed_at INTEGER;
