-- Relay schema v2: several destinations, durable nonces for signed requests, per-destination
-- delivery state in the audit log. Every string these tables hold is built by the relay:
-- destination names and reason codes from config and code, ids that passed a format check,
-- hashes. Nothing a caller wrote is stored unless it is an allowlisted value.

-- Outbox rows now belong to one of several destinations; the age of an event decides whether
-- a destination (Meta: 7 days) would still accept it.
ALTER TABLE outbox ADD COLUMN event_time INTEGER;              -- unix seconds; NULL for v1 rows
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (destination, state, next_attempt_ms);

-- Per destination: {"tiktok": {"state": "delivered", "event": "Schedule", "request_id": "..."}}.
-- `pending` counts destinations still queued; `decision` is 'delivered' once it reaches 0
-- without a dead letter.
ALTER TABLE audit ADD COLUMN destinations TEXT NOT NULL DEFAULT '{}';
ALTER TABLE audit ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
UPDATE audit
   SET destinations = json_object('tiktok', json_object('state', decision, 'event', event)),
       pending = (decision = 'queued')
 WHERE decision IN ('queued', 'delivered', 'dead_lettered');

-- v1 wrote the names of unknown fields into reasons; keep only their length.
UPDATE audit
   SET reasons = (
       SELECT json_group_array(
                CASE WHEN value LIKE 'dropped_field:%'
                          AND substr(value, 15) NOT IN ('email', 'phone', 'ttp', 'value', 'currency',
                                                        'value_without_currency')
                     THEN 'unknown_field:legacy:' || length(substr(value, 15))
                     ELSE value END)
         FROM json_each(audit.reasons))
 WHERE reasons LIKE '%dropped_field:%';

-- Signed requests already processed, by the SHA-256 of their signature, until their timestamp
-- can no longer pass the replay window.
CREATE TABLE nonce (
    hash       TEXT    PRIMARY KEY,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nonce_expiry ON nonce (expires_ms);
