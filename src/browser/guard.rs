//! The probe's guard: which intercepted requests may leave the browser.
//!
//! While a tab probes a form, every request of the page, its iframes and its dedicated workers
//! is paused (`Fetch.enable`); service and shared workers are paused all the time, by the browser
//! session. Each paused request is recorded by the capture (with its body) and then judged here:
//!
//! - one that carries a typed canary value in any encoding the analyzer knows (plain,
//!   URL-encoded, base64, lowercase, md5/sha1/sha256; in the URL, the body or any header) is
//!   failed, whoever it is addressed to — the site, a form backend or a tracker;
//! - a body that cannot be read is not guessed about: a non-GET request whose body is missing
//!   from the pause is failed;
//! - a navigation of the main frame (a form submission) is failed, to any host;
//! - a non-GET request to the scanned site is failed (a submission by script).
//!
//! The headers `Fetch` shows include the `Cookie` header the request will carry (measured in
//! Chromium 156), so a cookie the page wrote a typed value into is caught with the rest. The
//! probe runs in a browser context of its own (`sandbox.rs`), so such a cookie never reaches
//! another tab, or a page visited later, where nothing is intercepted.
//!
//! WebSockets bypass `Fetch`: the tab takes them offline for the probe (see `interact.rs`).

use super::protocol::{RequestPaused, header};
use crate::analyze::canary::Needles;

/// What happens to a paused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Failed inside the browser (`BlockedByClient`), with why.
    Block(&'static str),
}

/// The rules of one scan: the site and the canaries typed into it.
#[derive(Debug, Default)]
pub struct Guard {
    site: String,
    needles: Needles,
    /// `--submit-forms HOST`: a staging host of the site that submissions may reach.
    submit_to: Option<String>,
}

/// Why a request carrying a canary was stopped.
pub const CARRIES_CANARY: &str = "carries a typed canary value";
const UNREADABLE_BODY: &str = "its body could not be read during the form probe";
const NAVIGATION: &str = "a navigation during the form probe";
const SUBMISSION: &str = "a submission to the scanned site";

impl Guard {
    pub fn new(site: &str, needles: Needles, submit_to: Option<String>) -> Guard {
        Guard {
            site: site.to_string(),
            needles,
            submit_to,
        }
    }

    /// Whether submissions to `host` are let through (`--submit-forms`).
    pub fn submits_to(&self, host: &str) -> bool {
        self.submit_to
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `host` belongs to the scanned site (its registrable domain).
    pub fn is_site(&self, host: &str) -> bool {
        crate::crawl::same_site(&self.site, host)
    }

    /// Judges a request paused in a tab that is probing (`main_frame`: the tab's top frame id).
    pub fn judge_probe(&self, req: &RequestPaused, main_frame: Option<&str>) -> Verdict {
        let host = super::capture::host_of(&req.request.url);
        if self.submits_to(&host) {
            // Staging, named by the user: its own submissions go through, typed values and all.
            return Verdict::Continue;
        }
        if let Verdict::Block(why) = self.judge_worker(req) {
            return Verdict::Block(why);
        }
        let is_main_navigation = req.resource_type == "Document"
            && (main_frame.is_none() || req.frame_id.as_deref() == main_frame);
        if is_main_navigation {
            return Verdict::Block(NAVIGATION);
        }
        if req.request.method != "GET" && self.is_site(&host) {
            return Verdict::Block(SUBMISSION);
        }
        Verdict::Continue
    }

    /// Judges a request paused in a service or shared worker: only canaries matter there.
    pub fn judge_worker(&self, req: &RequestPaused) -> Verdict {
        if self.needles.is_empty() {
            return Verdict::Continue;
        }
        let r = &req.request;
        let body = body_text(req);
        if body.is_none() && r.has_post_data && r.method != "GET" {
            return Verdict::Block(UNREADABLE_BODY);
        }
        let headers: String = r
            .headers
            .as_object()
            .map(|h| {
                h.values()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let referer = header(&r.headers, "referer").unwrap_or_default();
        let hits = self.needles.find(
            &r.url,
            body.as_deref().unwrap_or_default(),
            &format!("{referer}\n{headers}"),
        );
        if hits.is_empty() {
            Verdict::Continue
        } else {
            Verdict::Block(CARRIES_CANARY)
        }
    }
}

/// The body of a paused request: `postData`, or its base64 entries.
fn body_text(req: &RequestPaused) -> Option<String> {
    use base64::Engine as _;
    if let Some(text) = &req.request.post_data {
        return Some(text.clone());
    }
    let mut bytes = Vec::new();
    for e in &req.request.post_data_entries {
        let b = e.bytes.as_deref()?;
        bytes.extend(base64::engine::general_purpose::STANDARD.decode(b).ok()?);
    }
    (!req.request.post_data_entries.is_empty())
        .then(|| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::protocol::{PostDataEntry, RequestData};
    use crate::model::Canary;
    use serde_json::json;
    use sha2::Digest;

    fn guard() -> Guard {
        let canaries = vec![
            Canary {
                kind: "email".into(),
                value: "pw.canary.abcdef@example.com".into(),
            },
            Canary {
                kind: "text".into(),
                value: "semaglutide refill question pwabcdeft".into(),
            },
        ];
        Guard::new("clinic.test", Needles::new(&canaries), None)
    }

    fn paused(url: &str, method: &str, kind: &str, body: Option<&str>) -> RequestPaused {
        RequestPaused {
            request_id: "1".into(),
            request: RequestData {
                url: url.into(),
                method: method.into(),
                headers: json!({}),
                post_data: body.map(str::to_string),
                has_post_data: body.is_some(),
                ..Default::default()
            },
            resource_type: kind.into(),
            frame_id: Some("main".into()),
            pixelwatch_blocked: None,
        }
    }

    #[test]
    fn canaries_are_stopped_whoever_they_are_addressed_to() {
        let g = guard();
        let main = Some("main");
        for (url, method, kind, body) in [
            (
                "https://www.clinic.test/api?e=pw.canary.abcdef%40example.com",
                "GET",
                "Fetch",
                None,
            ),
            (
                "https://forms.vendor.test/submit",
                "POST",
                "XHR",
                Some("q=semaglutide+refill+question+pwabcdeft"),
            ),
            (
                "https://img.tracker.test/p.gif?x=pw.canary.abcdef@example.com",
                "GET",
                "Image",
                None,
            ),
        ] {
            assert_eq!(
                g.judge_probe(&paused(url, method, kind, body), main),
                Verdict::Block(CARRIES_CANARY),
                "{url}"
            );
        }
        let sha = hex::encode(sha2::Sha256::digest(b"pw.canary.abcdef@example.com"));
        let hashed = paused(
            &format!("https://www.facebook.com/tr?ud[em]={sha}"),
            "GET",
            "Image",
            None,
        );
        assert_eq!(g.judge_probe(&hashed, main), Verdict::Block(CARRIES_CANARY));
        let mut in_header = paused("https://t.test/x", "GET", "Fetch", None);
        in_header.request.headers = json!({"X-Lead": "pw.canary.abcdef@example.com"});
        assert_eq!(g.judge_worker(&in_header), Verdict::Block(CARRIES_CANARY));
        // A cookie the page wrote what was typed into (Fetch shows the Cookie header).
        let mut in_cookie = paused("https://clinic.test/ping", "GET", "Fetch", None);
        in_cookie.request.headers =
            json!({"Cookie": "visitor=v1; lead=pw.canary.abcdef%40example.com"});
        assert_eq!(
            g.judge_probe(&in_cookie, main),
            Verdict::Block(CARRIES_CANARY)
        );
        let mut b64 = paused("https://t.test/x", "POST", "Fetch", None);
        b64.request.post_data_entries = vec![PostDataEntry {
            bytes: Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "{\"e\":\"pw.canary.abcdef@example.com\"}",
            )),
        }];
        assert_eq!(g.judge_worker(&b64), Verdict::Block(CARRIES_CANARY));
    }

    #[test]
    fn submissions_and_navigations_are_held_back_other_requests_pass() {
        let g = guard();
        let main = Some("main");
        let post = paused(
            "https://www.clinic.test/contact",
            "POST",
            "Fetch",
            Some("x=1"),
        );
        assert_eq!(g.judge_probe(&post, main), Verdict::Block(SUBMISSION));
        let nav = paused("https://forms.vendor.test/thanks", "GET", "Document", None);
        assert_eq!(g.judge_probe(&nav, main), Verdict::Block(NAVIGATION));
        let mut iframe = paused("https://widget.test/embed", "GET", "Document", None);
        iframe.frame_id = Some("child".into());
        assert_eq!(g.judge_probe(&iframe, main), Verdict::Continue);
        let pixel = paused("https://www.facebook.com/tr?ev=Lead", "GET", "Image", None);
        assert_eq!(g.judge_probe(&pixel, main), Verdict::Continue);
        let mut unreadable = paused("https://t.test/upload", "POST", "Fetch", None);
        unreadable.request.has_post_data = true;
        assert_eq!(g.judge_worker(&unreadable), Verdict::Block(UNREADABLE_BODY));
    }

    #[test]
    fn submit_forms_lets_only_the_named_host_through() {
        let canaries = vec![Canary {
            kind: "email".into(),
            value: "pw.canary.abcdef@example.com".into(),
        }];
        let g = Guard::new(
            "clinic.test",
            Needles::new(&canaries),
            Some("staging.clinic.test".into()),
        );
        let main = Some("main");
        let to_staging = paused(
            "https://staging.clinic.test/book",
            "POST",
            "Document",
            Some("email=pw.canary.abcdef%40example.com"),
        );
        assert_eq!(g.judge_probe(&to_staging, main), Verdict::Continue);
        let to_www = paused(
            "https://www.clinic.test/book",
            "POST",
            "Document",
            Some("x=1"),
        );
        assert_ne!(g.judge_probe(&to_www, main), Verdict::Continue);
        let tracker = paused(
            "https://t.test/p?e=pw.canary.abcdef@example.com",
            "GET",
            "Image",
            None,
        );
        assert_eq!(
            g.judge_probe(&tracker, main),
            Verdict::Block(CARRIES_CANARY)
        );
    }
}
