-- Scanner history: one row per scan, with what it saw, for listing, diffing and retention.
CREATE TABLE scans (
    id              INTEGER PRIMARY KEY,
    site            TEXT    NOT NULL,
    started_at      TEXT    NOT NULL,
    finished_at     TEXT    NOT NULL,
    consent_mode    TEXT    NOT NULL,
    pages           INTEGER NOT NULL,
    pages_errored   INTEGER NOT NULL,
    requests        INTEGER NOT NULL,
    third_party_hosts INTEGER NOT NULL,
    cookies         INTEGER NOT NULL,
    findings        INTEGER NOT NULL,
    worst_severity  TEXT,
    report_json     TEXT    NOT NULL
);
CREATE INDEX scans_by_site ON scans (site, id);

CREATE TABLE pages (
    id          INTEGER PRIMARY KEY,
    scan_id     INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    url         TEXT    NOT NULL,
    final_url   TEXT    NOT NULL,
    status      INTEGER,
    error       TEXT,
    depth       INTEGER NOT NULL,
    found_via   TEXT    NOT NULL
);
CREATE INDEX pages_by_scan ON pages (scan_id);

CREATE TABLE requests (
    id            INTEGER PRIMARY KEY,
    page_id       INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    url           TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    initiator     TEXT,
    status        INTEGER,
    third_party   INTEGER NOT NULL,
    vendor        TEXT
);
CREATE INDEX requests_by_page ON requests (page_id);
CREATE INDEX requests_by_host ON requests (host);

CREATE TABLE cookies (
    id              INTEGER PRIMARY KEY,
    scan_id         INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    expires         REAL,
    http_only       INTEGER NOT NULL,
    secure          INTEGER NOT NULL,
    same_site       TEXT,
    third_party     INTEGER NOT NULL,
    set_by          TEXT    NOT NULL,
    first_seen_page TEXT    NOT NULL
);
CREATE INDEX cookies_by_scan ON cookies (scan_id);

CREATE TABLE storage (
    id          INTEGER PRIMARY KEY,
    page_id     INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    origin      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    third_party INTEGER NOT NULL
);
CREATE INDEX storage_by_page ON storage (page_id);

CREATE TABLE scripts (
    id          INTEGER PRIMARY KEY,
    page_id     INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    url         TEXT,
    sha256      TEXT,
    third_party INTEGER NOT NULL
);
CREATE INDEX scripts_by_page ON scripts (page_id);

CREATE TABLE frames (
    id          INTEGER PRIMARY KEY,
    page_id     INTEGER NOT NULL REFERENCES pages (id) ON DELETE CASCADE,
    url         TEXT    NOT NULL,
    third_party INTEGER NOT NULL
);

CREATE TABLE findings (
    id          INTEGER PRIMARY KEY,
    scan_id     INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    vendor      TEXT,
    page        TEXT    NOT NULL,
    request_url TEXT,
    evidence    TEXT    NOT NULL,
    rule        TEXT    NOT NULL
);
CREATE INDEX findings_by_scan ON findings (scan_id);
