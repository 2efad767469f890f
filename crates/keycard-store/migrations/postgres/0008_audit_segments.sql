-- keycard schema v8: the audit trail is kept in segments, one row per batch the audit writer
-- appended (about 100 ms of events), each holding its events as a JSON array of the SPEC §7
-- documents — the same objects as the audit file's lines. One row per batch instead of one
-- per event: the store's share of every authenticated request falls from a B-tree insert
-- (with its index) to a few bytes of a large row. `audit_events` stays, as a view with one
-- row per event, for SQL readers. Event ids (paging cursors) are segment id * 65536 +
-- position. Keep in step with the other engine's 0008.
CREATE TABLE audit_segments (
    id          BIGSERIAL PRIMARY KEY,
    first_ts_ms BIGINT NOT NULL,
    last_ts_ms  BIGINT NOT NULL,
    events      BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX audit_segments_last_ts ON audit_segments(last_ts_ms);

-- The events stored so far, in their order, 65536 to a segment.
INSERT INTO audit_segments (first_ts_ms, last_ts_ms, events, body)
SELECT min(ts_ms), max(ts_ms), count(*), '[' || string_agg(doc, ',' ORDER BY id) || ']'
FROM (
    SELECT id, ts_ms, json_build_object(
        'ts', to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
              || '.' || lpad((ts_ms % 1000)::text, 3, '0') || 'Z',
        'request_id', request_id, 'route', route, 'method', method, 'outcome', outcome,
        'reason', reason, 'subject', subject, 'credential_id', credential_id, 'ip', ip)::text AS doc,
        (row_number() OVER (ORDER BY id) - 1) / 65536 AS part
    FROM audit_events
) AS docs
GROUP BY part
ORDER BY part;

DROP TABLE audit_events;

CREATE VIEW audit_events AS
SELECT s.id * 65536 + e.ord - 1 AS id,
       e.value ->> 'ts' AS ts,
       e.value ->> 'request_id' AS request_id,
       e.value ->> 'route' AS route,
       e.value ->> 'method' AS method,
       e.value ->> 'outcome' AS outcome,
       e.value ->> 'reason' AS reason,
       e.value ->> 'subject' AS subject,
       e.value ->> 'credential_id' AS credential_id,
       e.value ->> 'ip' AS ip
FROM audit_segments s, jsonb_array_elements(s.body::jsonb) WITH ORDINALITY AS e(value, ord);
