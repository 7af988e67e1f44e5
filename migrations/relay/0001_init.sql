-- Relay schema v1. Nothing here holds a raw incoming payload: the outbox holds only the
-- sanitized outgoing event, the audit holds decisions and field names, consent holds hashes.

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    destination     TEXT    NOT NULL,            -- 'tiktok'
    event_id        TEXT    NOT NULL,
    test_event_code TEXT,                        -- NULL for live events; never mixed in a batch
    payload         TEXT    NOT NULL,            -- sanitized event JSON, exactly as sent
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    last_error      TEXT,
    audit_id        INTEGER NOT NULL
);
CREATE UNIQUE INDEX outbox_event ON outbox (destination, event_id, IFNULL(test_event_code, ''));
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);

CREATE TABLE consent (
    id              INTEGER PRIMARY KEY,
    key_hash        TEXT    NOT NULL,            -- sha256 of 'token:<t>' or 'subject:<s>'
    granted         INTEGER NOT NULL,
    purposes        TEXT    NOT NULL,            -- JSON array
    source          TEXT    NOT NULL,
    policy_version  TEXT    NOT NULL,
    gpc             INTEGER NOT NULL,
    decided_at      INTEGER NOT NULL,            -- unix seconds, as stated by the caller
    recorded_ms     INTEGER NOT NULL
);
CREATE INDEX consent_key ON consent (key_hash, id);

CREATE TABLE audit (
    id              INTEGER PRIMARY KEY,
    received_ms     INTEGER NOT NULL,
    source          TEXT    NOT NULL,            -- 'browser' | 'server'
    event_id        TEXT,                        -- outgoing event_id, NULL when dropped early
    event           TEXT,                        -- mapped standard event, never the incoming name
    decision        TEXT    NOT NULL CHECK (decision IN
                      ('queued', 'delivered', 'dropped', 'blocked', 'dead_lettered')),
    reasons         TEXT    NOT NULL,            -- JSON array of reason codes and field names
    consent_id      INTEGER,
    legal_basis     TEXT,
    request_id      TEXT,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX audit_received ON audit (received_ms);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL                          -- 'id_salt': keys derived event ids
);
