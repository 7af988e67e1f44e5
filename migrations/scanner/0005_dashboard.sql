-- The dashboard: accounts (argon2 PHC hashes; NULL for accounts that only sign in through a
-- reverse proxy's header), sessions (the SHA-256 of the cookie's token, never the token), mutes
-- (a finding's cause silenced for one site until it expires, with a reason), and the record of
-- every action taken (who, when, what).
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'approver')),
    created_at    TEXT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_name);

-- kind, vendor ('' for none) and rule: the cause, as the reports group findings.
CREATE TABLE mutes (
    id         INTEGER PRIMARY KEY,
    site       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    vendor     TEXT NOT NULL,
    rule       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    lifted_by  TEXT,
    lifted_at  TEXT
);
CREATE INDEX mutes_by_site ON mutes (site, expires_at);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    site   TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_site ON audit_log (site, id);
