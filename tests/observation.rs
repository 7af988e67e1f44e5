//! How a page is watched, in real Chromium: long enough for tags a tag manager injects from
//! timers, not held by keepalive pairs, heartbeats, sockets, streams or long polls; invisible to
//! the checks pages use to hide pixels from scanners; and a form probe that lets no typed value
//! leave the browser — while the report still names every tracker that tried to take one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pixelwatch::fixture::{Body, FixtureServer, LoggedRequest, Response, Site};
use pixelwatch::model::{ScanReport, SettleReason};
use pixelwatch::scan::{self, ScanOptions, Silent};

const C: &str = "www.clinic.test";
const TT: &str = "analytics.tiktok.com";
const CHAT: &str = "chat.widget-example.test";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn html(body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>t</title></head><body>{body}</body></html>"
    )
}

fn options(server: &FixtureServer, start: &str) -> ScanOptions {
    ScanOptions {
        start: start.to_string(),
        max_pages: 40,
        concurrency: 2,
        page_timeout: Duration::from_secs(10),
        settle_quiet: Duration::from_millis(500),
        // Far above what any page here needs: a page cut at the cap is a failed rule.
        settle_max: Duration::from_secs(9),
        sitemaps: false,
        browser_args: server.browser_args(),
        ..Default::default()
    }
}

async fn scan(opts: &ScanOptions) -> ScanReport {
    let filter = std::env::var("PIXELWATCH_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(240), scan::run(opts, Arc::new(Silent)))
        .await
        .expect("a scan must end in bounded time")
        .expect("scan runs")
}

fn page<'a>(r: &'a ScanReport, path: &str) -> &'a pixelwatch::model::Page {
    let url = format!("https://{C}{path}");
    r.pages
        .iter()
        .find(|p| p.url == url)
        .unwrap_or_else(|| panic!("{url} not visited"))
}

/// A tag the tag manager injects: it fires its pixel and leaves a cookie and a storage key.
fn late_tag(name: &str) -> Response {
    Response::js(format!(
        "document.cookie = '_{name}=1; path=/; max-age=3600';
         localStorage.setItem('{name}_key', '1');
         new Image().src = 'https://{TT}/api/v2/pixel?tag={name}';"
    ))
}

/// CORS answers for a tracker that receives JSON posts (with a preflight) from the clinic.
fn cors_pixel(req: &LoggedRequest) -> Response {
    let origin = format!("https://{C}");
    if req.method == "OPTIONS" {
        return Response::status(204)
            .header("access-control-allow-origin", &origin)
            .header("access-control-allow-headers", "content-type")
            .header("access-control-allow-methods", "POST")
            .header("access-control-allow-credentials", "true");
    }
    Response::ok("application/json", "{\"code\":0}")
        .header("access-control-allow-origin", &origin)
        .header("access-control-allow-credentials", "true")
}

fn settle_site() -> Site {
    let links = r#"<a href="/late">late</a> <a href="/keepalive">keepalive</a>
        <a href="/heartbeat">heartbeat</a> <a href="/streams">streams</a>"#;
    Site::new()
        .page(C, "/", &html(links))
        // "Window Loaded + delay" tags, tag sequencing, an idle-time tag.
        .page(
            C,
            "/late",
            &html(r#"<script src="https://www.googletagmanager.com/gtm.js?id=GTM-LATE"></script>"#),
        )
        .route(
            "www.googletagmanager.com",
            "/gtm.js",
            Response::js(
                "const inject = (src) => { const s = document.createElement('script'); s.src = src; document.head.appendChild(s); };
                 addEventListener('load', () => {
                   setTimeout(() => inject('https://www.googletagmanager.com/tags/one.js'), 1000);
                   setTimeout(() => {
                     inject('https://www.googletagmanager.com/tags/two.js');
                     setTimeout(() => inject('https://www.googletagmanager.com/tags/four.js'), 1500);
                   }, 2500);
                   requestIdleCallback(() => inject('https://www.googletagmanager.com/tags/idle.js'));
                 });",
            ),
        )
        .route("www.googletagmanager.com", "/tags/one.js", late_tag("one"))
        .route("www.googletagmanager.com", "/tags/two.js", late_tag("two"))
        .route("www.googletagmanager.com", "/tags/four.js", late_tag("four"))
        .route("www.googletagmanager.com", "/tags/idle.js", late_tag("idle"))
        .handler(TT, "/api/v2/pixel", cors_pixel)
        // The TikTok pixel's pattern: a keepalive JSON POST cross-origin (preflighted), and a beacon.
        .page(
            C,
            "/keepalive",
            &html(&format!(
                r#"<script>
                fetch('https://{TT}/api/v2/pixel/track', {{method: 'POST', keepalive: true, credentials: 'include',
                  headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{event: 'Pageview'}})}});
                navigator.sendBeacon('https://www.facebook.com/tr', 'ev=PageView');
                </script>"#
            )),
        )
        .handler(TT, "/api/v2/pixel/track", cors_pixel)
        .handler("www.facebook.com", "/tr", |_| Response::status(204))
        // Heartbeats: an interval and a self-rescheduling timer, forever.
        .page(
            C,
            "/heartbeat",
            &html(
                r#"<script>
                setInterval(() => fetch('/collect/beat?t=' + Date.now()), 300);
                (function beat() { navigator.sendBeacon('/collect/ping'); setTimeout(beat, 400); })();
                let n = 0; const again = () => { n++; fetch('/collect/chain?n=' + n); setTimeout(() => again(), 350); };
                setTimeout(again, 100);
                </script>"#,
            ),
        )
        .handler(C, "/collect", |_| Response::status(204))
        // Things that never finish: a socket, an event stream, a long poll.
        .page(
            C,
            "/streams",
            &html(&format!(
                r#"<script>
                const ws = new WebSocket('wss://{CHAT}/socket');
                ws.onopen = () => ws.send('hello');
                new EventSource('/events');
                fetch('/poll');
                </script>"#
            )),
        )
        .route(CHAT, "/socket", Response::websocket())
        .route("live.other-widget.test", "/socket", Response::websocket())
        .route(
            C,
            "/events",
            Response {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                body: Body::Stall(b"data: hello\n\n".to_vec()),
                delay: None,
            },
        )
        .route(
            C,
            "/poll",
            Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Body::Hang,
                delay: None,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_is_watched_as_long_as_its_tags_need_and_no_longer() {
    let server = FixtureServer::start(settle_site()).await.unwrap();
    let report = scan(&options(&server, &format!("https://{C}/"))).await;
    assert_eq!(report.summary.cdp_decode_failures, 0);
    assert_eq!(report.summary.cdp_events_dropped, 0);
    assert_eq!(report.summary.pages_errored, 0, "{:#?}", report.pages);

    // Every late tag ran before the tab left: its pixel, its cookie and its storage key.
    let late = page(&report, "/late");
    for tag in ["one", "two", "four", "idle"] {
        assert!(
            late.requests
                .iter()
                .any(|r| r.url == format!("https://{TT}/api/v2/pixel?tag={tag}")),
            "the {tag} tag's pixel was missed (settled after {} ms, {:?})",
            late.settle_ms,
            late.settle_reason
        );
        assert!(
            late.cookies
                .iter()
                .any(|c| c.name == format!("_{tag}") && c.set_by == "script"),
            "the {tag} tag's cookie was missed: {:?}",
            late.cookies
        );
        assert!(
            late.storage.iter().any(|s| s.key == format!("{tag}_key")),
            "the {tag} tag's storage key was missed"
        );
    }
    // The last tag runs at 4 s; the page ended by the rules, not by the cap.
    assert_eq!(late.settle_reason, SettleReason::Quiet);
    assert!(late.settle_ms >= 4000, "{}", late.settle_ms);

    // Nothing else holds a page to the cap.
    for path in ["/", "/keepalive", "/heartbeat", "/streams"] {
        let p = page(&report, path);
        assert_eq!(
            p.settle_reason,
            SettleReason::Quiet,
            "{path} was watched until the cap ({} ms)",
            p.settle_ms
        );
    }
    assert_eq!(
        report.summary.settle_reasons.get("quiet").copied(),
        Some(report.pages.len())
    );

    // Keepalive pairs and beacons are recorded as answered, not as aborted by leaving.
    let keepalive = page(&report, "/keepalive");
    for url in [
        format!("https://{TT}/api/v2/pixel/track"),
        "https://www.facebook.com/tr".to_string(),
    ] {
        let r = keepalive
            .requests
            .iter()
            .find(|r| r.url == url && r.method == "POST")
            .unwrap_or_else(|| panic!("{url} not recorded"));
        assert!(r.status.is_some() && r.error.is_none(), "{r:?}");
    }
    assert!(
        keepalive
            .requests
            .iter()
            .any(|r| r.url.ends_with("/api/v2/pixel/track") && r.method == "OPTIONS"),
        "the preflight is recorded"
    );

    // Streams are recorded even though they never held the page.
    let streams = page(&report, "/streams");
    for (kind, url) in [
        ("WebSocket", format!("wss://{CHAT}/socket")),
        ("EventSource", format!("https://{C}/events")),
        ("Fetch", format!("https://{C}/poll")),
    ] {
        assert!(
            streams
                .requests
                .iter()
                .any(|r| r.resource_type == kind && r.url == url),
            "{kind} {url} not recorded"
        );
    }
    // Repeats of a heartbeat are all recorded.
    let heartbeat = page(&report, "/heartbeat");
    assert!(
        heartbeat
            .requests
            .iter()
            .filter(|r| r.url.contains("/collect/beat"))
            .count()
            >= 2
    );
}

/// Each check a "humans only" tag manager might run; the page loads its tracker only when the
/// check says human. `bot_control` says human only for a bot: it must stay silent.
const CHECKS: &[(&str, &str)] = &[
    (
        "webdriver",
        "navigator.webdriver === false || navigator.webdriver === undefined",
    ),
    (
        "user_agent",
        "!/headless/i.test(navigator.userAgent) && /Chrome\\//.test(navigator.userAgent)",
    ),
    (
        "brands",
        "!!navigator.userAgentData && navigator.userAgentData.brands.length > 0 && !navigator.userAgentData.brands.some(b => /headless/i.test(b.brand))",
    ),
    (
        "high_entropy_hints",
        "await navigator.userAgentData.getHighEntropyValues(['platform', 'fullVersionList']).then(h => h.fullVersionList.length > 0 && h.platform.length > 0)",
    ),
    (
        "worker_user_agent",
        "await new Promise(res => { const w = new Worker(URL.createObjectURL(new Blob([\"postMessage([navigator.userAgent, navigator.userAgentData ? navigator.userAgentData.brands.length : 0])\"]))); w.onmessage = (e) => res(!/headless/i.test(e.data[0]) && e.data[1] > 0); })",
    ),
    (
        "plugins",
        "navigator.plugins.length > 0 && navigator.mimeTypes.length > 0",
    ),
    (
        "languages",
        "navigator.languages.length > 0 && !!navigator.language",
    ),
    (
        "chrome_object",
        "typeof window.chrome === 'object' && window.chrome !== null",
    ),
    (
        "window_size",
        "outerWidth > 0 && outerHeight > 0 && outerWidth >= innerWidth && screen.width >= outerWidth",
    ),
    (
        "focus",
        "document.hasFocus() && document.visibilityState === 'visible'",
    ),
    (
        "no_extra_globals",
        "await new Promise(res => { const f = document.createElement('iframe'); document.body.appendChild(f); const clean = new Set(Object.getOwnPropertyNames(f.contentWindow)); const extra = Object.getOwnPropertyNames(window).filter(n => !clean.has(n) && !/^\\d+$/.test(n)); res(extra.length === 0); })",
    ),
    (
        "native_to_string",
        "[setTimeout, setInterval, requestIdleCallback, history.pushState, history.replaceState, Function.prototype.toString, Object.getOwnPropertyDescriptor(Document.prototype, 'cookie').set, Object.getOwnPropertyDescriptor(Document.prototype, 'cookie').get, Object.getOwnPropertyDescriptor(window, 'outerWidth').get, Object.getOwnPropertyDescriptor(window, 'outerHeight').get].every(f => /^function [\\w ]*\\(\\) \\{ \\[native code\\] \\}$/.test(Function.prototype.toString.call(f))) && Function.prototype.toString.call(setTimeout) === 'function setTimeout() { [native code] }'",
    ),
    (
        "no_own_patches",
        "!Object.prototype.hasOwnProperty.call(history, 'pushState') && !Object.prototype.hasOwnProperty.call(setTimeout, 'prototype') && !Object.prototype.hasOwnProperty.call(Function.prototype.toString, 'prototype') && setTimeout.name === 'setTimeout' && setTimeout.length === 1 && requestIdleCallback.length === 1",
    ),
    (
        "runtime_enable",
        "(() => { let hit = false; const e = new Error(); Error.prepareStackTrace = () => { hit = true; return ''; }; console.debug(e); delete Error.prepareStackTrace; return !hit; })()",
    ),
    ("bot_control", "navigator.webdriver === true"),
];

fn cloaked_site() -> Site {
    let links: String = CHECKS
        .iter()
        .map(|(name, _)| format!(r#"<a href="/check/{name}">{name}</a> "#))
        .collect();
    let mut site =
        Site::new()
            .page(C, "/", &html(&links))
            .handler(TT, "/i18n/pixel/events.js", |_| {
                Response::js("window.ttq = 1;")
            });
    for (name, check) in CHECKS {
        site = site.page(
            C,
            &format!("/check/{name}"),
            &html(&format!(
                r#"<script>
                (async function check() {{
                  let human = false;
                  try {{ human = !!({check}); }} catch (e) {{ human = false; }}
                  if (human) {{
                    const s = document.createElement('script');
                    s.src = 'https://{TT}/i18n/pixel/events.js?check={name}';
                    document.head.appendChild(s);
                  }}
                }})();
                </script>"#
            )),
        );
    }
    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_shown_only_to_humans_are_found() {
    let server = FixtureServer::start(cloaked_site()).await.unwrap();
    let report = scan(&options(&server, &format!("https://{C}/"))).await;
    assert_eq!(report.summary.pages_errored, 0);
    let loaded: BTreeSet<String> = report
        .pages
        .iter()
        .flat_map(|p| &p.requests)
        .filter_map(|r| {
            r.url
                .split_once("events.js?check=")
                .map(|(_, c)| c.to_string())
        })
        .collect();
    let missed: Vec<&str> = CHECKS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != "bot_control" && !loaded.contains(*name))
        .collect();
    assert!(
        missed.is_empty(),
        "a page told it was scanned by: {missed:?}"
    );
    assert!(
        !loaded.contains("bot_control"),
        "the control check must stay silent, or the gate proves nothing"
    );
    // What the report recorded is what the server saw.
    let served: BTreeSet<String> = server
        .requests()
        .iter()
        .filter_map(|r| {
            r.target
                .split_once("events.js?check=")
                .map(|(_, c)| c.to_string())
        })
        .collect();
    assert_eq!(served, loaded);
}

/// Every way a submit handler can send what was typed, to the site, a form backend or trackers.
fn probe_site() -> Site {
    let handler = format!(
        r#"<script>
        const early = new WebSocket('wss://{CHAT}/socket');
        early.onopen = () => early.send('hello');
        const worker = new Worker('/worker.js');
        const shared = new SharedWorker('/shared.js');
        navigator.serviceWorker.register('/sw.js');
        async function sha256(text) {{
          const bytes = new TextEncoder().encode(text.trim().toLowerCase());
          return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))
            .map(b => b.toString(16).padStart(2, '0')).join('');
        }}
        document.getElementById('lead').addEventListener('submit', async (e) => {{
          e.preventDefault();
          const email = document.getElementById('email').value;
          const note = document.getElementById('note').value;
          fetch('/api/lead?email=' + encodeURIComponent(email));
          new Image().src = '/pixel.gif?e=' + email;
          navigator.sendBeacon('/beacon', JSON.stringify({{email}}));
          early.send(JSON.stringify({{email}}));
          try {{ const late = new WebSocket('wss://{CHAT}/socket?e=' + encodeURIComponent(email)); late.onopen = () => late.send(email); }} catch (_) {{}}
          worker.postMessage(email);
          shared.port.postMessage(email);
          navigator.serviceWorker.ready.then(r => r.active.postMessage(email));
          fetch('https://{TT}/api/v2/pixel', {{method: 'POST', mode: 'no-cors', body: JSON.stringify({{event: 'SubmitForm', properties: {{email, note}}}})}});
          new Image().src = 'https://www.facebook.com/tr?ev=Lead&ud[em]=' + await sha256(email);
          setTimeout(() => navigator.sendBeacon('https://{TT}/api/v2/pixel?late=1', note), 300);
        }});
        </script>"#
    );
    Site::new()
        .page(
            C,
            "/",
            &html(
                r#"<a href="/contact">Contact</a> <a href="/partner-form">Partner form</a>
                   <script>navigator.serviceWorker.register('/sw.js');</script>"#,
            ),
        )
        .page(
            C,
            "/contact",
            &html(&format!(
                r#"<form id="lead"><input id="email" type="email" name="email">
                   <textarea id="note" name="note"></textarea><button>Send</button></form>{handler}"#
            )),
        )
        // A form posted straight to a third-party form backend (a lead in the clinic's CRM).
        .page(
            C,
            "/partner-form",
            &html(
                r#"<form action="https://forms.crm-example.test/submit" method="post">
                   <input type="email" name="email"><input name="first_name"><button>Go</button></form>
                   <script>new WebSocket('wss://live.other-widget.test/socket');
                   new WebSocket('wss://chat.widget-example.test/socket?page=partner');</script>"#,
            ),
        )
        .route(
            C,
            "/worker.js",
            Response::js("onmessage = (e) => fetch('/worker-lead?e=' + encodeURIComponent(e.data));"),
        )
        .route(
            C,
            "/shared.js",
            Response::js("onconnect = (c) => { c.ports[0].onmessage = (e) => fetch('/shared-lead?e=' + encodeURIComponent(e.data)); };"),
        )
        .route(
            C,
            "/sw.js",
            Response::js(
                "self.addEventListener('install', () => self.skipWaiting());
                 self.addEventListener('message', (e) => fetch('/sw-lead', {method: 'POST', body: e.data}));",
            ),
        )
        .handler(C, "/", |_| Response::status(204))
        .route(CHAT, "/socket", Response::websocket())
        .handler(TT, "/api/v2/pixel", |_| Response::status(204))
        .handler("www.facebook.com", "/tr", |_| Response::status(204))
        .handler("forms.crm-example.test", "/", |_| Response::html("<h1>thanks</h1>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_typed_leaves_the_browser_and_every_tracker_leak_is_still_named() {
    let server = FixtureServer::start(probe_site()).await.unwrap();
    // One tab: a service worker's requests belong to whichever page of the site is open, and
    // with tabs side by side that may be the neighbour.
    let opts = ScanOptions {
        concurrency: 1,
        ..options(&server, &format!("https://{C}/"))
    };
    let report = scan(&opts).await;
    assert_eq!(report.summary.pages_errored, 0, "{:#?}", report.pages);
    let contact = page(&report, "/contact");
    assert_eq!(contact.probed_fields, 2);
    let partner = page(&report, "/partner-form");
    assert_eq!(partner.probed_fields, 2);

    // Give anything the browser might still have queued time to arrive: it must not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values reached a server: {leaked:?}"
    );

    // Each attempt is listed as held back...
    let blocked = contact.blocked_submissions.join("\n");
    for what in [
        format!("GET https://{C}/api/lead?email="),
        format!("GET https://{C}/pixel.gif?e="),
        format!("POST https://{C}/beacon"),
        format!("GET https://{C}/worker-lead?e="),
        format!("GET https://{C}/shared-lead?e="),
        "(held back by the form probe: shared workers are offline during it, in a shared worker)"
            .to_string(),
        format!("POST https://{TT}/api/v2/pixel (carries"),
        "GET https://www.facebook.com/tr?ev=Lead&ud[em]=".to_string(),
        format!("POST https://{TT}/api/v2/pixel?late=1"),
        format!("WebSocket wss://{CHAT}/socket?e="),
        format!(
            "POST https://{C}/sw-lead (held back by the form probe: carries a typed canary value, in a service worker)"
        ),
    ] {
        assert!(blocked.contains(&what), "{what} not held back:\n{blocked}");
    }
    assert!(
        partner
            .blocked_submissions
            .iter()
            .any(|b| b.starts_with("POST https://forms.crm-example.test/submit")),
        "{:?}",
        partner.blocked_submissions
    );
    // ...and the service worker's request was caught outside the tab.
    assert!(
        contact
            .requests
            .iter()
            .filter(|r| r.target == "service_worker" && r.url == format!("https://{C}/sw-lead"))
            .map(|r| r.error.as_deref().unwrap_or_default())
            .eq(["held back by the form probe: carries a typed canary value"]),
        "the service worker's request was not held back"
    );
    // The frame sent on the socket opened before the probe is evidence, never sent.
    assert!(contact.requests.iter().any(|r| {
        r.method == "SEND"
            && r.resource_type == "WebSocket"
            && r.post_data
                .as_deref()
                .is_some_and(|b| b.contains("pw.canary"))
    }));

    // That socket was open during the probe: frames queued on it must never be released (any
    // change to the tab's offline rule would release them), so that tab is parked, never closed
    // (the browser is killed at the end), and the scan goes on in a fresh tab whose WebSockets
    // work: the next page's sockets connect.
    let order: Vec<&str> = report.pages.iter().map(|p| p.url.as_str()).collect();
    let contact_at = order.iter().position(|u| u.ends_with("/contact")).unwrap();
    let partner_at = order
        .iter()
        .position(|u| u.ends_with("/partner-form"))
        .unwrap();
    assert!(
        partner_at > contact_at,
        "one tab visits in link order: {order:?}"
    );
    for host in [CHAT, "live.other-widget.test"] {
        let socket = partner
            .requests
            .iter()
            .find(|r| r.resource_type == "WebSocket" && r.host == host && r.phase == "load")
            .unwrap_or_else(|| panic!("the partner page's socket to {host} is not recorded"));
        assert!(socket.error.is_none(), "{socket:?}");
    }

    // The leak evidence is as complete as if the requests had gone out.
    let leak = |vendor: &str, needle: &str| {
        report.findings.iter().any(|f| {
            f.kind == "phi_leak"
                && f.vendor.as_deref() == Some(vendor)
                && f.page.ends_with("/contact")
                && f.evidence.contains(needle)
        })
    };
    assert!(leak("tiktok", "email"), "{:#?}", report.findings);
    assert!(leak("meta", "sha256"), "{:#?}", report.findings);
}

/// A page that keeps what is typed instead of sending it: into a cookie, local storage and a
/// BroadcastChannel, then pings the site. The probe types into a copy of the page in a browser
/// context of its own, so nothing typed reaches the jar or storage the scan's other pages share
/// (they send whatever they find to a tracker), the copy's own same-site request is held back
/// for the cookie it would carry, and the copy still starts with the visitor's cookies and
/// storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_value_the_page_keeps_never_reaches_another_page_or_request() {
    const OTHERS: usize = 8;
    // Every other page sends the tracker whatever the jar, storage or channel hold.
    let snoop = format!(
        r#"<script>
        const send = (what) => {{ new Image().src = 'https://{TT}/api/v2/pixel?' + what; }};
        send('lead=' + encodeURIComponent(localStorage.getItem('lead')) + '&jar=' + encodeURIComponent(document.cookie));
        new BroadcastChannel('lead').onmessage = (e) => send('heard=' + encodeURIComponent(e.data));
        setTimeout(() => fetch('/still-here'), 400);
        </script>"#
    );
    let links: String = (1..=OTHERS)
        .map(|i| format!(r#"<a href="/other{i}">Other {i}</a> "#))
        .collect();
    let mut site = Site::new()
        .page(
            C,
            "/",
            &html(&format!(
                r#"<a href="/contact">Contact</a> {links}
                <script>document.cookie = 'visitor=v1; path=/; max-age=3600';
                localStorage.setItem('visitor', 'v1');</script>"#
            )),
        )
        .page(
            C,
            "/contact",
            &html(
                r#"<form id="lead"><input id="email" type="email" name="email"><button>Send</button></form>
                <script>
                const email = document.getElementById('email');
                email.addEventListener('focus', () => fetch('/seen?visitor=' + localStorage.getItem('visitor')
                  + '&cookie=' + document.cookie.includes('visitor=v1')), {once: true});
                const keep = () => {
                  // A request on its way while the value is written: judged paused before the
                  // write, it must not pick the cookie up when it is let go (or, paused after
                  // it, it is held back for the cookie). Without pinned headers this leaked.
                  fetch('/race');
                  document.cookie = 'lead=' + encodeURIComponent(email.value) + '; path=/; max-age=3600';
                  localStorage.setItem('lead', email.value);
                  new BroadcastChannel('lead').postMessage(email.value);
                };
                email.addEventListener('input', keep);
                document.getElementById('lead').addEventListener('submit', (e) => {
                  e.preventDefault(); keep(); setTimeout(() => fetch('/ping'), 100);
                });
                </script>"#,
            ),
        )
        .handler(C, "/seen", |_| Response::status(204))
        .handler(C, "/ping", |_| Response::status(204))
        .handler(C, "/race", |_| Response::status(204))
        .handler(C, "/still-here", |_| Response::status(204))
        .handler(TT, "/api/v2/pixel", |_| Response::status(204));
    for i in 1..=OTHERS {
        site = site.page(C, &format!("/other{i}"), &html(&snoop));
    }
    let server = FixtureServer::start(site).await.unwrap();
    let report = scan(&options(&server, &format!("https://{C}/"))).await;
    assert_eq!(report.pages.len(), OTHERS + 2);
    assert_eq!(report.summary.pages_errored, 0, "{:#?}", report.pages);
    let contact = page(&report, "/contact");
    assert_eq!(contact.probed_fields, 1);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let leaked = server.canaries_received(&report.canaries);
    assert!(
        leaked.is_empty(),
        "typed values reached a server: {leaked:?}"
    );

    // The copy's own ping would have carried the cookie the page wrote (the paused request
    // shows its Cookie header): held back, and why.
    assert!(
        contact
            .blocked_submissions
            .iter()
            .any(|b| *b == format!("GET https://{C}/ping (carries a typed canary value)")),
        "{:#?}",
        contact.blocked_submissions
    );
    // The copy started as the visitor: the home page's cookie and storage were there.
    let seen: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/seen"))
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/seen?visitor=v1&cookie=true"]);
    // The page's record holds its load once and the probe after it.
    let documents = contact
        .requests
        .iter()
        .filter(|r| r.resource_type == "Document" && r.url.ends_with("/contact"))
        .count();
    assert_eq!(documents, 1, "{:#?}", contact.requests);
    assert!(
        contact
            .requests
            .iter()
            .any(|r| r.url.contains("/seen?visitor=v1") && r.phase == "probe"),
        "{:#?}",
        contact.requests
    );
    // Pages visited after the probe still had the visitor's own cookie, never the typed one.
    for p in report.pages.iter().filter(|p| p.url.contains("/other")) {
        let pixel = p
            .requests
            .iter()
            .find(|r| r.host == TT && r.url.contains("lead="))
            .unwrap_or_else(|| panic!("{}: the tracker was not called", p.url));
        assert!(pixel.url.contains("visitor%3Dv1"), "{}", pixel.url);
        assert!(!pixel.url.contains("lead%3D"), "{}", pixel.url);
    }
}

/// The probe's copy runs in a browser context of its own, so only that context's shared
/// workers go offline while it probes: the visited page's own shared worker (the scan's other
/// pages share it) keeps working, while the copy's is held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_probed_copys_shared_workers_go_offline() {
    let site = Site::new()
        .page(
            C,
            "/",
            &html(r#"<a href="/contact">Contact</a>"#),
        )
        .page(
            C,
            "/contact",
            &html(
                r#"<form><input type="email" name="email"><button>Send</button></form>
                <script>
                // The visit's first load sets the cookie; the probe's copy starts with it.
                const who = document.cookie.includes('seen=1') ? 'copy' : 'visit';
                document.cookie = 'seen=1; path=/';
                const w = new SharedWorker('/ticker.js', {name: who});
                w.port.postMessage(who);
                </script>"#,
            ),
        )
        .route(
            C,
            "/ticker.js",
            Response::js(
                "onconnect = (c) => { c.ports[0].onmessage = (e) => {
                   let n = 0;
                   const t = setInterval(() => { fetch('/tick?who=' + e.data + '&n=' + n); if (++n >= 80) clearInterval(t); }, 100);
                 }; };",
            ),
        )
        .handler(C, "/tick", |_| Response::status(204));
    let server = FixtureServer::start(site).await.unwrap();
    let opts = ScanOptions {
        concurrency: 1,
        ..options(&server, &format!("https://{C}/"))
    };
    let report = scan(&opts).await;
    assert_eq!(report.summary.pages_errored, 0, "{:#?}", report.pages);
    assert_eq!(page(&report, "/contact").probed_fields, 1);
    // At the server: the visit's worker ticked without a gap from its first tick to well after
    // the copy's last (the visiting tab stays on the page while its copy loads, settles, is
    // probed and closed), so it was never offline.
    let log = server.requests();
    let n_of = |who: &str| -> Vec<(usize, u32)> {
        log.iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let n = r.target.strip_prefix(&format!("/tick?who={who}&n="))?;
                Some((i, n.parse().ok()?))
            })
            .collect()
    };
    let (visit, copy) = (n_of("visit"), n_of("copy"));
    let last_copy = copy.last().expect("the copy's worker ticked").0;
    assert!(
        visit.iter().any(|(i, _)| *i > last_copy),
        "the visit's worker stopped before the copy did: {visit:?} / {copy:?}"
    );
    let mut seen: Vec<u32> = visit.iter().map(|(_, n)| *n).collect();
    seen.sort_unstable();
    let expected: Vec<u32> = (0..seen.len() as u32).collect();
    assert_eq!(seen, expected, "the visit's worker missed ticks (offline)");
    // ...and nothing of it is recorded as held back.
    let held: Vec<&str> = report
        .pages
        .iter()
        .flat_map(|p| &p.requests)
        .filter(|r| r.target == "shared_worker" && r.url.contains("who=visit&"))
        .filter_map(|r| r.error.as_deref())
        .collect();
    assert!(held.is_empty(), "{held:?}");
}

/// A site that serves a form page once and loops on any later request for it (a bot wall, a
/// one-time link): the probe's copy cannot load it, and the report says the page's forms were
/// not checked instead of showing a silent `probed_fields: 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_page_the_probe_could_not_copy_says_so() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let served = Arc::new(AtomicUsize::new(0));
    let seen = served.clone();
    let form = html(r#"<form><input type="email" name="email"><button>Send</button></form>"#);
    let site = Site::new()
        .page(C, "/", &html(r#"<a href="/once">Book</a>"#))
        .handler(C, "/once", move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Response::html(form.as_str())
            } else {
                Response::redirect("/once")
            }
        });
    let server = FixtureServer::start(site).await.unwrap();
    let report = scan(&options(&server, &format!("https://{C}/"))).await;
    let once = page(&report, "/once");
    assert!(once.error.is_none(), "{:?}", once.error);
    assert_eq!(once.forms, 1);
    assert_eq!(once.probed_fields, 0);
    assert_eq!(
        once.probe_skipped.as_deref(),
        Some("the copy of the page it types into did not load")
    );
    assert_eq!(report.summary.probes_skipped, 1);
    assert!(page(&report, "/").probe_skipped.is_none());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["summary"]["probes_skipped"], 1);
    // Said where people read: the terminal summary, the CI comment and the HTML report.
    let engine = pixelwatch::rules::Engine::bundled();
    let terminal = pixelwatch::report::terminal::summary(&report, &engine);
    assert!(
        terminal.contains("the form probe could not run on 1 page(s) with forms"),
        "{terminal}"
    );
    let md = pixelwatch::report::ci::markdown(&report, &[], None, &engine);
    assert!(
        md.contains("The form probe could not run on 1 page(s) with forms"),
        "{md}"
    );
    let html =
        pixelwatch::report::html::render(&pixelwatch::report::html::Context::new(&report, &engine));
    assert!(html.contains("<li><b>1</b>form pages not probed</li>"));
    assert!(
        served.load(Ordering::SeqCst) > 1,
        "the copy asked for the page again"
    );
}

/// A chat widget holds a socket open on every page, and many pages have a form; the widget
/// says "typing" on its socket when a field is typed into. Each probe's copy of such a page
/// is parked (frames it queued must never be released), and a browser holds only a few parked
/// tabs: after that the browser is replaced. Every page's chat socket connects and says hello,
/// across replacements, with the visitor's cookies carried over, and nothing typed ever leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_keeps_working_sockets_however_many_tabs_the_probe_parks() {
    const FORMS: usize = 9;
    let chat = format!(
        r#"<script>const ws = new WebSocket('wss://{CHAT}/socket');
        ws.onopen = () => ws.send('hello ' + location.pathname);
        document.addEventListener('input', () => ws.send('typing'));</script>"#
    );
    let links: String = (1..=FORMS)
        .map(|i| format!(r#"<a href="/form{i}">Form {i}</a> "#))
        .collect();
    let mut site = Site::new()
        .page(
            C,
            "/",
            &html(&format!(
                "{links}<script>document.cookie = 'visitor=v1; path=/; max-age=3600';</script>{chat}"
            )),
        )
        .route(CHAT, "/socket", Response::websocket());
    for i in 1..=FORMS {
        site = site.page(
            C,
            &format!("/form{i}"),
            &html(&format!(
                r#"<form><input type="email" name="email"><button>Send</button></form>{chat}"#
            )),
        );
    }
    let server = FixtureServer::start(site).await.unwrap();
    let pids = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen = pids.clone();
    let opts = options(&server, &format!("https://{C}/"));
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = tokio::time::timeout(
        Duration::from_secs(240),
        scan::run_with_hook(
            &opts,
            Arc::new(Silent),
            Some(Arc::new(move |pid| {
                seen.lock().unwrap().insert(pid);
            })),
        ),
    )
    .await
    .expect("a scan must end in bounded time")
    .expect("scan runs");
    assert_eq!(report.pages.len(), FORMS + 1);
    assert_eq!(report.summary.pages_errored, 0, "{:#?}", report.pages);
    assert_eq!(report.summary.browser_restarts, 0, "nothing crashed");
    assert!(
        pids.lock().unwrap().len() >= 2 && report.summary.browser_replacements >= 1,
        "{FORMS} parked tabs must have replaced the browser at least once"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = server.requests();
    let hellos: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.method == "WS")
        .filter_map(|r| {
            String::from_utf8_lossy(&r.body)
                .strip_prefix("hello ")
                .map(str::to_string)
        })
        .collect();
    for p in &report.pages {
        assert!(
            p.probed_fields > 0 || p.url.ends_with(".test/"),
            "{} probed",
            p.url
        );
        let socket = p
            .requests
            .iter()
            .find(|r| r.resource_type == "WebSocket" && r.host == CHAT && r.phase == "load")
            .unwrap_or_else(|| panic!("{}: no chat socket recorded", p.url));
        assert!(socket.error.is_none(), "{}: {socket:?}", p.url);
        let path = p.url.trim_start_matches(&format!("https://{C}"));
        assert!(hellos.contains(path), "{path} never said hello: {hellos:?}");
    }
    // The visitor keeps its cookies in the replacement browser: every form page asked for
    // after the home page sent the cookie the home page set.
    for r in requests
        .iter()
        .filter(|r| r.host == C && r.method == "GET" && r.target.starts_with("/form"))
    {
        assert!(
            r.header("cookie").is_some_and(|c| c.contains("visitor=v1")),
            "{} went without the visitor's cookie",
            r.target
        );
    }
    assert!(
        server.canaries_received(&report.canaries).is_empty(),
        "a typed value left the browser"
    );
}
