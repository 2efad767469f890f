-- keycard schema v2 (PostgreSQL): users with passwords. Keep in step with sqlite/0002_users.sql.
ALTER TABLE subjects ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN password_id TEXT;
ALTER TABLE subjects ADD COLUMN password_hash TEXT;
ALTER TABLE subjects ADD COLUMN digest_sealed BYTEA;
ALTER TABLE subjects ADD COLUMN password_changed_at BIGINT;
