-- The approved state of each site: drift is measured against it.
CREATE TABLE baselines (
    site          TEXT    PRIMARY KEY,
    scan_id       INTEGER REFERENCES scans (id) ON DELETE SET NULL,
    approved_at   TEXT    NOT NULL,
    baseline_json TEXT    NOT NULL
);
