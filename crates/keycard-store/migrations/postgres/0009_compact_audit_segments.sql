-- keycard schema v9: new audit segments are written compactly — a JSON object
-- {"v":2,"t0":T,"shared":[[route,method,outcome,reason,subject,credential_id,ip],...],
--  "events":[[dt,request_id,s],...]}: an event's ts is t0 + dt Unix milliseconds and its
-- other fields are the s-th (from 0) shared part's. The fields most events of a batch have
-- in common are named once: about 30 bytes an event instead of 200. Segments written by v8
-- (a JSON array of the SPEC §7 documents, starting with '[') stay as they are; the
-- `audit_events` view reads both forms, one row per event, the same columns as before.
-- Keep in step with the other engine's 0009.
DROP VIEW audit_events;

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
FROM audit_segments s, jsonb_array_elements(s.body::jsonb) WITH ORDINALITY AS e(value, ord)
WHERE left(s.body, 1) = '['
UNION ALL
SELECT c.id,
       to_char(to_timestamp(c.ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || '.' || lpad((c.ts_ms % 1000)::text, 3, '0') || 'Z',
       c.request_id,
       c.part ->> 0, c.part ->> 1, c.part ->> 2, c.part ->> 3, c.part ->> 4, c.part ->> 5,
       c.part ->> 6
FROM (
    SELECT s.id * 65536 + e.ord - 1 AS id,
           (d.doc ->> 't0')::bigint + (e.value ->> 0)::bigint AS ts_ms,
           e.value ->> 1 AS request_id,
           d.doc -> 'shared' -> ((e.value ->> 2)::int) AS part
    FROM audit_segments s
    CROSS JOIN LATERAL (SELECT s.body::jsonb AS doc) AS d
    CROSS JOIN LATERAL jsonb_array_elements(d.doc -> 'events') WITH ORDINALITY AS e(value, ord)
    WHERE left(s.body, 1) = '{'
) AS c;
