-- Fleet: sites live in the store; alerts are claimed once; the per-page tables nothing read are
-- dropped (every scan keeps its full report in scans.report_json), except the vendors per scan
-- that the HTML report's "first seen" reads.
CREATE TABLE scan_vendors (
    scan_id INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    vendor  TEXT    NOT NULL,
    PRIMARY KEY (scan_id, vendor)
);
INSERT INTO scan_vendors (scan_id, vendor)
    SELECT DISTINCT p.scan_id, r.vendor FROM requests r JOIN pages p ON r.page_id = p.id
    WHERE r.vendor IS NOT NULL;
DROP TABLE requests;
DROP TABLE storage;
DROP TABLE scripts;
DROP TABLE frames;
DROP TABLE pages;
DROP TABLE cookies;
DROP TABLE findings;

-- url is the normalised start URL (the key of scans and baselines); settings_json holds the
-- ScanSettings set for the site (unset fields left out); enqueued_until is the scheduler's
-- cursor, the last due time it queued (RFC 3339).
CREATE TABLE sites (
    url            TEXT PRIMARY KEY,
    schedule       TEXT NOT NULL,
    settings_json  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    enqueued_until TEXT
);

-- drift_episode counts the times a site's drift was cleared, outages the times it went down:
-- with the fingerprint they make each alert's claim key (alerts.dedupe), unique per site and
-- channel, so a drift is alerted once however many processes judge it. claimed_until (ms since
-- the epoch) is how long a sender holds a row it is delivering.
ALTER TABLE alert_state ADD COLUMN drift_episode INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alert_state ADD COLUMN outages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN dedupe TEXT;
ALTER TABLE alerts ADD COLUMN claimed_until INTEGER;
CREATE UNIQUE INDEX alerts_once ON alerts (site, channel, dedupe);
