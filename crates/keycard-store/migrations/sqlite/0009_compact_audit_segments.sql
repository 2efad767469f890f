-- keycard schema v9: new audit segments are written compactly — a JSON object
-- {"v":2,"t0":T,"shared":[[route,method,outcome,reason,subject,credential_id,ip],...],
--  "events":[[dt,request_id,s],...]}: an event's ts is t0 + dt Unix milliseconds and its
-- other fields are the s-th (from 0) shared part's. The fields most events of a batch have
-- in common are named once: about 30 bytes an event instead of 200. Segments written by v8
-- (a JSON array of the SPEC §7 documents, starting with '[') stay as they are; the
-- `audit_events` view reads both forms, one row per event, the same columns as before.
-- Each compact body is parsed a fixed number of times per query, not once per event: a segment holds a few
-- thousand events and its body a few hundred KiB, and a view that read `t0` or a shared
-- part out of the body for every event took minutes for 28,000 events on PostgreSQL and
-- 3 s on SQLite (0.13 s with this one). The join order is fixed with CROSS JOIN: a
-- segment's events outside, its parts found through the index SQLite builds on the
-- materialised `parts` (the planner's own order parsed the events once per part).
-- Keep in step with the other engine's 0009.
DROP VIEW audit_events;
CREATE VIEW audit_events AS
WITH compact AS MATERIALIZED (
    SELECT id, json_extract(body, '$.t0') AS t0
    FROM audit_segments WHERE substr(body, 1, 1) = '{'
),
parts AS MATERIALIZED (
    SELECT s.id AS segment, p.key AS k, p.value AS part
    FROM audit_segments s, json_each(s.body, '$.shared') p
    WHERE substr(s.body, 1, 1) = '{'
)
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
FROM audit_segments s, json_each(s.body) e
WHERE substr(s.body, 1, 1) = '['
UNION ALL
SELECT c.id * 65536 + e.key,
       strftime('%Y-%m-%dT%H:%M:%S', (c.t0 + json_extract(e.value, '$[0]')) / 1000, 'unixepoch')
           || printf('.%03dZ', (c.t0 + json_extract(e.value, '$[0]')) % 1000),
       json_extract(e.value, '$[1]'),
       json_extract(p.part, '$[0]'), json_extract(p.part, '$[1]'), json_extract(p.part, '$[2]'),
       json_extract(p.part, '$[3]'), json_extract(p.part, '$[4]'), json_extract(p.part, '$[5]'),
       json_extract(p.part, '$[6]')
FROM compact c
CROSS JOIN audit_segments s
CROSS JOIN json_each(s.body, '$.events') e
CROSS JOIN parts p
WHERE s.id = c.id AND p.segment = c.id AND p.k = json_extract(e.value, '$[2]');
