-- keycard schema v9: new audit segments are written compactly — a JSON object
-- {"v":2,"t0":T,"shared":[[route,method,outcome,reason,subject,credential_id,ip],...],
--  "events":[[dt,request_id,s],...]}: an event's ts is t0 + dt Unix milliseconds and its
-- other fields are the s-th (from 0) shared part's. The fields most events of a batch have
-- in common are named once: about 30 bytes an event instead of 200. Segments written by v8
-- (a JSON array of the SPEC §7 documents, starting with '[') stay as they are; the
-- `audit_events` view reads both forms, one row per event, the same columns as before.
-- Each compact body is parsed a fixed number of times per query, not once per event: a segment holds a few
-- thousand events and its body a few hundred KiB, and a view that read `t0` or a shared
-- part out of the body for every event took minutes for 28,000 events on PostgreSQL
-- (0.2 s with this one: the bodies are parsed in a materialised CTE).
-- Keep in step with the other engine's 0009.
DROP VIEW audit_events;
CREATE VIEW audit_events AS
WITH compact AS MATERIALIZED (
    SELECT c.id, (c.doc ->> 't0')::bigint AS t0, c.doc -> 'shared' AS shared, c.doc -> 'events' AS events
    FROM (SELECT id, body::jsonb AS doc FROM audit_segments WHERE left(body, 1) = '{' OFFSET 0) AS c
)
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
SELECT c.id * 65536 + e.ord - 1,
       to_char(to_timestamp(t.ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || '.' || lpad((t.ts_ms % 1000)::text, 3, '0') || 'Z',
       e.value ->> 1,
       p.part ->> 0, p.part ->> 1, p.part ->> 2, p.part ->> 3, p.part ->> 4, p.part ->> 5,
       p.part ->> 6
FROM compact c
CROSS JOIN LATERAL jsonb_array_elements(c.events) WITH ORDINALITY AS e(value, ord)
CROSS JOIN LATERAL (SELECT c.t0 + (e.value ->> 0)::bigint AS ts_ms) AS t
CROSS JOIN LATERAL (SELECT c.shared -> ((e.value ->> 2)::int) AS part) AS p;
