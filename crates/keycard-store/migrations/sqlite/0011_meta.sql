-- keycard schema v11: facts about the store itself. Keep in step with
-- postgres/0011_meta.sql. `master_key_check` holds the check value of the master key the
-- store was sealed with, so that another key is refused before it misreads anything.
CREATE TABLE keycard_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
