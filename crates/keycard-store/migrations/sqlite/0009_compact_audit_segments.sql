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
SELECT id, strftime('%Y-%m-%dT%H:%M:%S', ts_ms / 1000, 'unixepoch') || printf('.%03dZ', ts_ms % 1000),
       request_id,
       json_extract(part, '$[0]'), json_extract(part, '$[1]'), json_extract(part, '$[2]'),
       json_extract(part, '$[3]'), json_extract(part, '$[4]'), json_extract(part, '$[5]'),
       json_extract(part, '$[6]')
FROM (
    SELECT s.id * 65536 + e.key AS id,
           json_extract(s.body, '$.t0') + json_extract(e.value, '$[0]') AS ts_ms,
           json_extract(e.value, '$[1]') AS request_id,
           json_extract(s.body, '$.shared[' || json_extract(e.value, '$[2]') || ']') AS part
    FROM audit_segments s, json_each(s.body, '$.events') e
    WHERE substr(s.body, 1, 1) = '{'
);
