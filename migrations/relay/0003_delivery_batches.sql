-- Relay schema v3: delivery is recorded per acknowledged request, not per event.
--
-- Until v2 every delivered event updated its audit row (per-destination state, decision,
-- pending, request id): two JSON rewrites per event with two destinations, on the single
-- writer that also acknowledges ingest. From v3 on, an acknowledged batch is one row here,
-- written in the transaction that deletes its outbox rows; the audit row keeps what was
-- decided at ingest, plus dead letters and replays (rare, still written to the row).
-- `pixelwatch-relay audit` (src/relay/audit.rs) reads the two together: a destination still
-- 'queued' in an audit row that a delivery row lists is 'delivered', with that request id and,
-- on a shortfall, 'counted' and the reason '<destination>:events_received_shortfall'; the
-- decision is 'delivered' once no destination is queued. So `audit.decision`, `pending` and
-- `request_id` are no longer updated on delivery; rows written before v3 were, and read the same.
--
-- Every string here is built by the relay or comes from the destination's answer (its request
-- id); nothing a caller wrote.
CREATE TABLE delivery (
    id             INTEGER PRIMARY KEY,
    destination    TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,        -- TikTok request_id, Meta fbtrace_id
    delivered_ms   INTEGER NOT NULL,
    counted        TEXT,                    -- '<received>/<sent>' when the destination counted fewer
    first_audit_id INTEGER NOT NULL,
    last_audit_id  INTEGER NOT NULL,
    audit_ids      TEXT    NOT NULL         -- JSON array of the audit row ids acknowledged, ascending
);
CREATE INDEX delivery_audit ON delivery (last_audit_id);

-- No query reads audit by received_ms (ids grow with it); the index only cost a b-tree insert
-- per event on the writer.
DROP INDEX audit_received;
