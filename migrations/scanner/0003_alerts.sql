-- Alerts and scheduled watching.
-- alert_state: per site, the fingerprint of the last drift alerted (so the same drift is not
-- re-sent on every scan) and the run of consecutive failed scans (so "site down" is sent once).
CREATE TABLE alert_state (
    site                 TEXT    PRIMARY KEY,
    drift_fingerprint    TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    down_alerted         INTEGER NOT NULL DEFAULT 0
);

-- One row per alert and channel. status: 'pending' (written before the first attempt), 'sent',
-- 'failed' (every attempt of a run failed; re-sent on the next run). The message is kept so a
-- re-send is exactly what would have been sent.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    site        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    scan_id     INTEGER REFERENCES scans (id) ON DELETE SET NULL,
    severity    TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    text_body   TEXT    NOT NULL,
    html_body   TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    sent_at     TEXT
);
CREATE INDEX alerts_by_status ON alerts (status, id);
CREATE INDEX alerts_by_site ON alerts (site, id);

-- Every scheduled run of `pixelwatch watch`, successful or not.
CREATE TABLE watch_runs (
    id          INTEGER PRIMARY KEY,
    site        TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    scan_id     INTEGER REFERENCES scans (id) ON DELETE SET NULL,
    outcome     TEXT    NOT NULL,
    drift_added INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX watch_runs_by_site ON watch_runs (site, id);
