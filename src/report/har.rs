//! The evidence package's HAR file (HTTP Archive 1.2): every page of a scan and every request it
//! made, request bodies included, built from what the scan report records.
//!
//! What the report does not record is written as HAR's "unknown" values and said in comments:
//! request and response timings (0), response headers and bodies (empty), sizes (-1). Cookie and
//! storage values are never recorded, so none appear. pixelwatch's own facts about each request
//! (vendor, phase, initiator, third party) are custom fields with a leading underscore, as HAR
//! allows.

use serde_json::{Value, json};

use crate::model::{Page, Request, ScanReport};

/// The HAR document of a scan.
pub fn har(report: &ScanReport) -> Value {
    let pages: Vec<Value> = report
        .pages
        .iter()
        .enumerate()
        .map(|(i, p)| page(report, i, p))
        .collect();
    let mut entries = Vec::new();
    for (i, p) in report.pages.iter().enumerate() {
        for r in &p.requests {
            entries.push(entry(report, i, p, r));
        }
    }
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "pixelwatch", "version": env!("CARGO_PKG_VERSION")},
            "pages": pages,
            "entries": entries,
            "comment": format!(
                "pixelwatch scan{} of {} from {} to {} (consent mode {}). Built from the scan report: request timings, response headers and response bodies are not recorded; request bodies are capped at 64 KiB; cookie and storage values are never recorded.",
                report.id.map(|i| format!(" #{i}")).unwrap_or_default(),
                report.site,
                report.started_at,
                report.finished_at,
                report.consent_mode
            ),
        }
    })
}

fn page_id(i: usize) -> String {
    format!("page_{}", i + 1)
}

fn page(report: &ScanReport, i: usize, p: &Page) -> Value {
    let mut comment = format!("{} (found via {}, depth {})", p.url, p.found_via, p.depth);
    if let Some(e) = &p.error {
        comment.push_str(&format!("; error: {e}"));
    }
    if !p.blocked_submissions.is_empty() {
        comment.push_str(&format!(
            "; form submissions held back by the probe: {}",
            p.blocked_submissions.join(", ")
        ));
    }
    json!({
        "startedDateTime": report.started_at,
        "id": page_id(i),
        "title": p.title.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| p.url.clone()),
        "pageTimings": {"onContentLoad": -1, "onLoad": p.load_ms, "comment": "onLoad: navigation to the end of the settle window"},
        "comment": comment,
    })
}

/// The MIME type a request body most likely has (the report does not keep the header).
fn body_type(body: &str) -> &'static str {
    let t = body.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && serde_json::from_str::<Value>(body.trim()).is_ok()
    {
        "application/json"
    } else if !t.contains(char::is_whitespace) && t.contains('=') {
        "application/x-www-form-urlencoded"
    } else {
        "text/plain"
    }
}

/// Where a redirect hop led: the next URL of the chain it is part of, if the page recorded one.
fn redirect_target(p: &Page, r: &Request) -> String {
    p.requests
        .iter()
        .find_map(|n| {
            let k = n.redirect_chain.iter().position(|u| *u == r.url)?;
            Some(n.redirect_chain.get(k + 1).unwrap_or(&n.url).clone())
        })
        .unwrap_or_default()
}

fn entry(report: &ScanReport, page: usize, p: &Page, r: &Request) -> Value {
    let query: Vec<Value> = url::Url::parse(&r.url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<Value> = r
        .referer
        .iter()
        .map(|v| json!({"name": "Referer", "value": v}))
        .collect();
    let mut request = json!({
        "method": r.method,
        "url": r.url,
        "httpVersion": "",
        "cookies": [],
        "headers": headers,
        "queryString": query,
        "headersSize": -1,
        "bodySize": match (&r.post_data, r.post_data_truncated) {
            (Some(b), false) => b.len() as i64,
            (None, _) => 0,
            (Some(_), true) => -1,
        },
    });
    if let Some(body) = &r.post_data {
        let mut post = json!({"mimeType": body_type(body), "text": body});
        if r.post_data_truncated {
            post["comment"] = json!("truncated at 64 KiB");
        }
        request["postData"] = post;
    }
    let redirect = redirect_target(p, r);
    json!({
        "pageref": page_id(page),
        "startedDateTime": report.started_at,
        "time": 0,
        "request": request,
        "response": {
            "status": r.status.unwrap_or(0),
            "statusText": r.error.clone().unwrap_or_default(),
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "", "comment": "response bodies are not recorded"},
            "redirectURL": redirect,
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": 0, "receive": 0, "comment": "timings are not recorded"},
        "comment": "startedDateTime is the scan's start; the order of entries is the order of requests",
        "_resourceType": r.resource_type,
        "_initiator": r.initiator,
        "_thirdParty": r.third_party,
        "_vendor": r.vendor,
        "_phase": r.phase,
        "_target": r.target,
        "_frameUrl": r.frame_url,
        "_redirectChain": r.redirect_chain,
        "_error": r.error,
    })
}

/// Writes the HAR file.
pub fn write(report: &ScanReport, path: &std::path::Path) -> Result<(), super::WriteError> {
    let bytes = serde_json::to_vec_pretty(&har(report)).expect("a HAR always serializes");
    super::write_file(path, &bytes)
}
