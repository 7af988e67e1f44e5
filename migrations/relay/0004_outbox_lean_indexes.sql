-- Relay schema v4: the outbox keeps no index that every accepted event pays for.
--
-- Until v3 each outbox row (one per destination per event) went into the table and two
-- indexes: the unique (destination, event_id, test_event_code) key and the due index, and
-- came out of all three on delivery. On the single writer that acknowledges every request,
-- that was the largest cost per event after the commit itself (measured: dropping the two
-- indexes took the writer's CPU per event from 27 to 16 us on the load benchmark).
--
-- From v4 on:
-- * Duplicate detection (an event id still in the outbox for a destination) is the writer's
--   in-memory set of keyed hashes, rebuilt from this table when the relay starts
--   (src/relay/outbox/pending.rs). Only the writer inserts or deletes outbox rows.
-- * A row's first attempt is claimed in id order from the table itself (ids only grow while
--   the relay runs); `next_attempt_ms = created_ms` marks a row that was never tried.
-- * Rows waiting for a retry (and replayed dead letters) are the only ones in the due index;
--   dead letters the only ones in the dead index. A healthy relay writes neither.
DROP INDEX outbox_event;
DROP INDEX outbox_due;
CREATE INDEX outbox_retry ON outbox (destination, next_attempt_ms)
    WHERE state = 'pending' AND next_attempt_ms > created_ms;
CREATE INDEX outbox_dead ON outbox (destination) WHERE state = 'dead';
