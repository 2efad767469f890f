-- keycard schema v8: the audit trail is kept in segments, one row per batch the audit writer
-- appended (about 100 ms of events), each holding its events as a JSON array of the SPEC §7
-- documents — the same objects as the audit file's lines. One row per batch instead of one
-- per event: the store's share of every authenticated request falls from a B-tree insert
-- (with its index) to a few bytes of a large row. `audit_events` stays, as a view with one
-- row per event, for SQL readers. Event ids (paging cursors) are segment id * 65536 +
-- position. Keep in step with the other engine's 0008.
CREATE TABLE audit_segments (
    id          INTEGER PRIMARY KEY,
    first_ts_ms INTEGER NOT NULL,
    last_ts_ms  INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX audit_segments_last_ts ON audit_segments(last_ts_ms);

-- The events stored so far, in their order, 65536 to a segment.
INSERT INTO audit_segments (first_ts_ms, last_ts_ms, events, body)
SELECT min(ts_ms), max(ts_ms), count(*), '[' || group_concat(doc, ',' ORDER BY id) || ']'
FROM (
    SELECT id, ts_ms, json_object(
        'ts', strftime('%Y-%m-%dT%H:%M:%S', ts_ms / 1000, 'unixepoch') || printf('.%03dZ', ts_ms % 1000),
        'request_id', request_id, 'route', route, 'method', method, 'outcome', outcome,
        'reason', reason, 'subject', subject, 'credential_id', credential_id, 'ip', ip) AS doc,
        (row_number() OVER (ORDER BY id) - 1) / 65536 AS part
    FROM audit_events
)
GROUP BY part
ORDER BY part;

DROP TABLE audit_events;

CREATE VIEW audit_events AS
SELECT s.id * 65536 + e.key AS id,
       json_extract(e.value, '$.ts') AS ts,
       json_extract(e.value, '$.request_id') AS request_id,
       json_extract(e.value, '$.route') AS route,
       json_extract(e.value, '$.method') AS method,
       json_extract(e.value, '$.outcome') AS outcome,
       json_extract(e.value, '$.reason') AS reason,
       json_extract(e.value, '$.subject') AS subject,
       json_extract(e.value, '$.credential_id') AS credential_id,
       json_extract(e.value, '$.ip') AS ip
FROM audit_segments s, json_each(s.body) e;
