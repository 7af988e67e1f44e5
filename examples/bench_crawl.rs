//! Crawl benchmark on a generated clinic site that behaves like a real one: a tag manager that
//! injects the TikTok and Meta pixels from timers (1 s and 2.5 s after load), a keepalive JSON
//! POST (CORS-preflighted), a sendBeacon pixel, an analytics heartbeat every second, a chat
//! widget holding a WebSocket open, images, first-party script and CSS, and an appointment form
//! on one page in ten.
//!
//! One run scans it at 1 tab (the baseline, on the first pages of the crawl), at the default
//! concurrency and at 8 tabs, and prints for each: pages/minute, peak memory of scanner plus
//! Chromium (PSS summed over the process tree, sampled every 100 ms; the fixture server runs in
//! this process and is included), why each page's settle ended, settle time, how many pages had
//! both late tags captured (held against what the fixture server saw on the wire), the late tags'
//! cookies, and the scanner's health counters.
//!
//! Run with `scripts/bench-crawl.sh` (release build). Not a test: it prints figures.
//! `BENCH_PAGES` (200), `BENCH_BASELINE_PAGES` (20) and `BENCH_CONCURRENCY` (e.g. `1,4,8,12`;
//! the first entry is the baseline) resize it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pixelwatch::fixture::{FixtureServer, LoggedRequest, Response, Site};
use pixelwatch::model::{Page, Request, ScanReport};
use pixelwatch::scan::{self, ScanOptions, Silent};

const HOST: &str = "www.bench-clinic.test";
const ORIGIN: &str = "https://www.bench-clinic.test";
const GTM: &str = "www.googletagmanager.com";
const GA: &str = "region1.google-analytics.com";
const CLARITY_TAG: &str = "www.clarity.ms";
const CLARITY_COLLECT: &str = "k.clarity.ms";
const TIKTOK: &str = "analytics.tiktok.com";
const META_JS: &str = "connect.facebook.net";
const META_PIXEL: &str = "www.facebook.com";
const CHAT_JS: &str = "widget.intercom.io";
const CHAT_WS: &str = "nexus-websocket-a.intercom.io";

/// Page `n` is `/{section}/{topic}-{n}`, sections and topics taken in turn.
const SECTIONS: &str = "services conditions providers locations patients blog";
const TOPICS: &str = "primary-care medical-weight-loss dermatology pediatrics womens-health \
    behavioral-health physical-therapy telehealth-visits allergy-and-asthma sleep-medicine \
    diabetes-care heart-health";
const SENTENCES: [&str; 14] = [
    "Our board-certified clinicians see new and returning patients six days a week, with same-day appointments held back every morning for urgent concerns.",
    "Most commercial plans, Medicare and several Medicaid managed-care plans are accepted; our billing team will check your coverage before your first visit.",
    "At your first appointment we review your history, current medications and goals, and agree on a plan you can actually follow between visits.",
    "Lab work is drawn on site, and results appear in the patient portal as soon as your clinician has reviewed them, usually within two business days.",
    "Telehealth visits are available for follow-ups, medication checks and many new concerns; you only need a phone or computer with a camera.",
    "If you are managing a chronic condition, a care coordinator will call between visits to help with refills, referrals and prior authorizations.",
    "We coordinate with specialists at the regional medical center and send your records ahead so you do not have to repeat tests.",
    "Please bring a photo ID, your insurance card and a list of the medications and supplements you take, including doses.",
    "Interpreters are available at no cost in Spanish, Vietnamese and American Sign Language; let us know when you book.",
    "Our sliding-fee program helps uninsured and underinsured patients; ask the front desk or apply online before your visit.",
    "Children are seen from birth through age eighteen, and adolescents can book confidential visits as state law allows.",
    "Parking is free in the garage on Lakeview Avenue, and the clinic is a five-minute walk from the Route 9 bus stop.",
    "Cancellations less than 24 hours ahead help us offer your slot to another patient; you can reschedule in the portal.",
    "In an emergency call 911 or go to the nearest emergency department; our after-hours nurse line can help you decide.",
];

/// The path of page `n` (page 0 is the home page).
fn page_path(n: usize) -> String {
    if n == 0 {
        return "/".into();
    }
    format!("/{}/{}-{n}", pick(SECTIONS, n), pick(TOPICS, n / 6))
}

/// The `i`-th word of a list, round and round.
fn pick(list: &'static str, i: usize) -> &'static str {
    let words: Vec<&'static str> = list.split_whitespace().collect();
    words[i % words.len()]
}

/// The page index a path names, if it is one of the site's pages.
fn page_index(path: &str, pages: usize) -> Option<usize> {
    let n = if path == "/" {
        0
    } else {
        path.rsplit('-').next()?.parse().ok()?
    };
    (n < pages && page_path(n) == path).then_some(n)
}

fn title_of(n: usize) -> String {
    if n == 0 {
        return "Lakeside Family Health".into();
    }
    let mut t = pick(TOPICS, n / 6).replace('-', " ");
    t[..1].make_ascii_uppercase();
    format!("{t} ({})", pick(SECTIONS, n))
}

/// Pages with an appointment request form (the scanner probes it).
fn has_form(n: usize) -> bool {
    n % 10 == 5
}

/// One page: about 6 KB of HTML, ~20 requests once its tags have run.
fn render_page(n: usize, pages: usize) -> String {
    let title = title_of(n);
    let link = |m: usize| format!(r#"<a href="{}">{}</a>"#, page_path(m), title_of(m));
    let nav: String = (1..=6.min(pages - 1))
        .map(|m| format!("<li>{}</li>", link(m)))
        .collect();
    // Each page links to the next five, so the crawl is a breadth-first fan-out.
    let related: String = (1..=5)
        .map(|k| (n * 5 + k) % pages)
        .map(|m| format!("<li>{}</li>", link(m)))
        .collect();
    let body: String = (0..4)
        .map(|p| {
            let text: Vec<&str> = (0..5)
                .map(|s| SENTENCES[(n + p * 5 + s) % SENTENCES.len()])
                .collect();
            format!("<p>{}</p>\n", text.join(" "))
        })
        .collect();
    let form = if has_form(n) {
        r#"<section id="request"><h2>Request an appointment</h2><form action="/appointments/request" method="post">
<label>First name <input name="first_name" autocomplete="given-name"></label> <label>Last name <input name="last_name" autocomplete="family-name"></label>
<label>Email <input type="email" name="email"></label> <label>Phone <input type="tel" name="phone"></label>
<label>Date of birth <input type="date" name="dob"></label> <label>Reason for visit <textarea name="reason"></textarea></label>
<button type="submit">Send request</form></section>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} | Lakeside Family Health</title>
<meta name="description" content="{title} at Lakeside Family Health: same-day appointments, telehealth and most insurance accepted.">
<link rel="stylesheet" href="/assets/site.css?v=31">
<!-- Google Tag Manager -->
<script>(function(w,d,s,l,i){{w[l]=w[l]||[];w[l].push({{'gtm.start':new Date().getTime(),event:'gtm.js'}});var f=d.getElementsByTagName(s)[0],j=d.createElement(s),dl=l!='dataLayer'?'&l='+l:'';j.async=true;j.src='https://{GTM}/gtm.js?id='+i+dl;f.parentNode.insertBefore(j,f);}})(window,document,'script','dataLayer','GTM-BENCH01');</script>
<!-- End Google Tag Manager -->
<script src="/assets/site.js?v=31" defer></script>
</head><body>
<header class="site-header"><a class="logo" href="/"><img src="/images/logo.gif" alt="Lakeside Family Health" width="180" height="48"></a>
<nav aria-label="Main"><ul>{nav}</ul></nav>
<a class="cta" href="tel:+15555550142">Call (555) 555-0142</a></header>
<main>
<h1>{title}</h1>
<img class="hero" src="/images/hero-{hero}.gif" alt="" width="1200" height="400">
{body}
<div class="provider-card"><img src="/images/provider-{prov}.gif" alt="Portrait of a clinician" width="160" height="160">
<p>Dr. Morgan Reyes, MD, and the primary care team at our Lakeview office.</p></div>
{form}
<h2>Related pages</h2><ul class="related">{related}</ul>
</main>
<footer><img src="/images/badge-jc.gif" alt="Accredited" width="64" height="64">
<p>Lakeside Family Health, 120 Lakeview Avenue, Suite 200, Springfield. Mon-Fri 8 am-6 pm, Sat 9 am-1 pm.</p>
<p><a href="{privacy}">Privacy practices</a> <a href="{nondisc}">Nondiscrimination notice</a>
<a href="https://www.facebook.com/lakesidefamilyhealth" rel="noopener">Facebook</a></p></footer>
<script async src="https://{CHAT_JS}/widget/benchapp"></script>
</body></html>
"#,
        hero = n % 12,
        prov = n % 7,
        privacy = page_path(7.min(pages - 1)),
        nondisc = page_path(13.min(pages - 1)),
    )
}

const SITE_CSS: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d2a33} nav ul{display:flex;gap:1rem;list-style:none;margin:0;padding:0}
.site-header{display:flex;align-items:center;gap:2rem;padding:1rem 2rem;background:#f4f8fb} .cta{margin-left:auto;font-weight:600} footer a{color:#cde}
main{max-width:60rem;margin:0 auto;padding:1rem 2rem} .hero{width:100%;height:auto} form label{display:block;margin:.5rem 0}
.provider-card{display:flex;gap:1rem;align-items:center;background:#f4f8fb;padding:1rem} footer{padding:2rem;background:#1d2a33;color:#fff}";

const SITE_JS: &str = "document.documentElement.classList.add('js');
document.querySelectorAll('a[href^=\"tel:\"]').forEach(function (a) {
  a.addEventListener('click', function () { (window.dataLayer = window.dataLayer || []).push({event: 'phone_click'}); });
});
var f = document.querySelector('#request form');
if (f) f.addEventListener('submit', function () { window.dataLayer.push({event: 'appointment_request'}); });";

/// The container: GA4 and Clarity on `gtm.js`; TikTok 1 s and Meta 2.5 s after window load
/// ("Window Loaded" + timer triggers), as clinics delay pixels to speed up first paint.
const GTM_JS: &str = "(function () {
  var dl = window.dataLayer = window.dataLayer || [];
  function inject(src) {
    var s = document.createElement('script'); s.async = true; s.src = src;
    var f = document.getElementsByTagName('script')[0]; f.parentNode.insertBefore(s, f);
  }
  inject('https://www.googletagmanager.com/gtag/js?id=G-BENCH01');
  inject('https://www.clarity.ms/tag/benchclr');
  function onLoad() {
    dl.push({event: 'gtm.load'});
    setTimeout(function () {
      dl.push({event: 'gtm.timer', 'gtm.timerId': 1});
      !function (w, d, t) { w.TiktokAnalyticsObject = t; var ttq = w[t] = w[t] || [];
        ttq.methods = ['page', 'track', 'identify']; ttq.setAndDefer = function (o, m) { o[m] = function () { o.push([m].concat(Array.prototype.slice.call(arguments, 0))); }; };
        for (var i = 0; i < ttq.methods.length; i++) ttq.setAndDefer(ttq, ttq.methods[i]);
        ttq.load = function (e) { inject('https://analytics.tiktok.com/i18n/pixel/events.js?sdkid=' + e + '&lib=' + t); };
        ttq.load('BENCHTT01'); ttq.page(); }(window, document, 'ttq');
    }, 1000);
    setTimeout(function () {
      dl.push({event: 'gtm.timer', 'gtm.timerId': 2});
      !function (f, b, e, v, n) { if (f.fbq) return; n = f.fbq = function () { n.callMethod ? n.callMethod.apply(n, arguments) : n.queue.push(arguments); };
        if (!f._fbq) f._fbq = n; n.push = n; n.loaded = !0; n.version = '2.0'; n.queue = []; inject(v); }(window, document, 'script', 'https://connect.facebook.net/en_US/fbevents.js');
      fbq('init', 'BENCHFB01'); fbq('track', 'PageView');
    }, 2500);
  }
  if (document.readyState === 'complete') onLoad(); else window.addEventListener('load', onLoad);
})();";

/// GA4: `_ga` cookie and a page_view by sendBeacon.
const GTAG_JS: &str = "(function () {
  var m = document.cookie.match(/(?:^|; )_ga=([^;]*)/), cid = m ? m[1].slice(6) : Math.floor(Math.random() * 1e9) + '.' + Math.floor(Date.now() / 1000);
  if (!m) document.cookie = '_ga=GA1.1.' + cid + '; path=/; max-age=63072000';
  navigator.sendBeacon('https://region1.google-analytics.com/g/collect?v=2&tid=G-BENCH01&cid=' + cid + '&en=page_view&dl=' + encodeURIComponent(location.href) + '&dt=' + encodeURIComponent(document.title));
})();";

/// Clarity: `_clck` cookie and a heartbeat to the same path every second.
const CLARITY_JS: &str = "(function () {
  if (!/(?:^|; )_clck=/.test(document.cookie)) document.cookie = '_clck=' + Math.random().toString(36).slice(2) + '|2|f|0|; path=/; max-age=31536000';
  var seq = 0;
  setInterval(function () {
    seq++;
    fetch('https://k.clarity.ms/collect', {method: 'POST', body: JSON.stringify({e: 'heartbeat', seq: seq, url: location.href})});
  }, 1000);
})();";

/// TikTok: `_ttp` cookie, session storage keys, and a keepalive JSON POST (preflighted).
const TIKTOK_JS: &str = "(function () {
  var q = window.ttq || [];
  var ttp = (document.cookie.match(/(?:^|; )_ttp=([^;]*)/) || [])[1];
  if (!ttp) { ttp = Math.random().toString(36).slice(2) + Date.now().toString(36); document.cookie = '_ttp=' + ttp + '; path=/; max-age=33696000'; }
  try { localStorage.setItem('tt_sessionId', ttp + '::' + Date.now()); localStorage.setItem('tt_appInfo', '{\"sessionId\":\"' + ttp + '\"}'); } catch (e) {}
  function send(event, props) {
    var body = JSON.stringify({event: event, event_id: Date.now() + '-' + Math.random(), properties: props || {},
      context: {pixel: {code: 'BENCHTT01'}, page: {url: location.href, referrer: document.referrer}, user: {ttp: ttp}}});
    fetch('https://analytics.tiktok.com/api/v2/pixel', {method: 'POST', keepalive: true, headers: {'content-type': 'application/json'}, body: body});
  }
  var api = {page: function () { send('Pageview'); }, track: function (e, p) { send(e, p); }, identify: function () {}};
  for (var i = 0; i < q.length; i++) { var c = q[i]; if (api[c[0]]) api[c[0]].apply(null, c.slice(1)); }
  window.ttq = api;
})();";

/// Meta: `_fbp` cookie, then its signals config, then the image pixel to facebook.com/tr.
const FBEVENTS_JS: &str = "(function () {
  var fbq = window.fbq, queue = (fbq && fbq.queue) || [], pixel = '';
  if (!/(?:^|; )_fbp=/.test(document.cookie)) document.cookie = '_fbp=fb.1.' + Date.now() + '.' + Math.floor(Math.random() * 1e9) + '; path=/; max-age=7776000';
  var fbp = document.cookie.match(/(?:^|; )_fbp=([^;]*)/)[1];
  function fire(ev) {
    new Image().src = 'https://www.facebook.com/tr/?id=' + pixel + '&ev=' + encodeURIComponent(ev) + '&dl=' + encodeURIComponent(location.href) +
      '&rl=' + encodeURIComponent(document.referrer) + '&if=false&ts=' + Date.now() + '&fbp=' + fbp;
  }
  fbq.callMethod = function (cmd, a) {
    if (cmd === 'init') { pixel = a; var s = document.createElement('script'); s.async = true;
      s.src = 'https://connect.facebook.net/signals/config/' + a + '?v=2.9.179&r=stable'; document.head.appendChild(s); }
    else if (cmd === 'track') { if (fbq.configured) fire(a); else fbq.pending.push(a); }
  };
  fbq.pending = [];
  fbq.registerConfig = function () { fbq.configured = true; fbq.pending.splice(0).forEach(fire); };
  for (var i = 0; i < queue.length; i++) fbq.callMethod.apply(null, queue[i]);
})();";

const FB_CONFIG_JS: &str =
    "fbq.registerConfig({pixelId: 'BENCHFB01', automaticMatching: {selectedMatchKeys: []}});";

/// Chat widget: a launcher button and a WebSocket held open for the whole visit.
const CHAT_WIDGET_JS: &str = "(function () {
  var b = document.createElement('button'); b.className = 'chat-launcher'; b.textContent = 'Chat with us'; document.body.appendChild(b);
  if (!/(?:^|; )intercom-id-benchapp=/.test(document.cookie)) document.cookie = 'intercom-id-benchapp=' + Math.random().toString(36).slice(2) + '; path=/; max-age=23328000';
  var ws = new WebSocket('wss://nexus-websocket-a.intercom.io/pubsub/5-benchapp');
  ws.onopen = function () { ws.send(JSON.stringify({eventName: 'hello', url: location.href})); };
  setInterval(function () { if (ws.readyState === 1) ws.send('{\"eventName\":\"ping\"}'); }, 5000);
})();";

/// A tracker response readable by the page: CORS headers echoing the page's origin.
fn cors(req: &LoggedRequest, resp: Response) -> Response {
    let origin = req.header("origin").unwrap_or(ORIGIN).to_string();
    resp.header("access-control-allow-origin", &origin)
        .header("access-control-allow-credentials", "true")
        .header("vary", "Origin")
}

/// When the fixture server served each page's HTML and received its late pixels, by page URL.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<HashMap<String, Arrivals>>>);

#[derive(Clone, Copy, Default)]
struct Arrivals {
    doc: Option<Instant>,
    tiktok: Option<Instant>,
    meta: Option<Instant>,
}

impl Timeline {
    fn mark(&self, page: Option<String>, f: impl FnOnce(&mut Arrivals, Instant)) {
        let now = Instant::now();
        if let Some(page) = page {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            f(m.entry(page).or_default(), now);
        }
    }

    fn take(&self) -> HashMap<String, Arrivals> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The page URL the TikTok pixel's JSON body names.
fn tiktok_page(r: &LoggedRequest) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    Some(v["context"]["page"]["url"].as_str()?.to_string())
}

/// The page URL the Meta pixel's `dl` parameter names.
fn meta_page(r: &LoggedRequest) -> Option<String> {
    let u = url::Url::parse(&r.url()).ok()?;
    Some(u.query_pairs().find(|(k, _)| k == "dl")?.1.into_owned())
}

fn site(pages: usize, timeline: &Timeline) -> Site {
    let gif = || Response::ok("image/gif", pixelwatch::demo::GIF.to_vec());
    let (t_doc, t_tiktok, t_meta) = (timeline.clone(), timeline.clone(), timeline.clone());
    Site::new()
        .handler(HOST, "/", move |req| {
            let path = req.target.split('?').next().unwrap_or("/");
            match page_index(path, pages) {
                Some(n) => {
                    t_doc.mark(Some(format!("{ORIGIN}{path}")), |a, now| {
                        a.doc.get_or_insert(now);
                    });
                    Response::html(render_page(n, pages))
                }
                None => Response::status(404),
            }
        })
        .route(HOST, "/assets/site.css", Response::ok("text/css", SITE_CSS))
        .route(HOST, "/assets/site.js", Response::js(SITE_JS))
        .handler(HOST, "/images/", move |_| gif())
        .route(GTM, "/gtm.js", Response::js(GTM_JS))
        .route(GTM, "/gtag/js", Response::js(GTAG_JS))
        .route(GA, "/g/collect", Response::status(204))
        .handler(CLARITY_TAG, "/tag/", |_| Response::js(CLARITY_JS))
        .handler(CLARITY_COLLECT, "/collect", |req| {
            cors(req, Response::status(204))
        })
        .route(TIKTOK, "/i18n/pixel/events.js", Response::js(TIKTOK_JS))
        .handler(TIKTOK, "/api/v2/pixel", move |req| {
            if req.method == "OPTIONS" {
                // Max-Age 0: every page pays its own preflight (without the header Chromium
                // caches it for 5 s and most pages would skip it).
                return cors(req, Response::status(204))
                    .header("access-control-allow-methods", "POST, OPTIONS")
                    .header("access-control-allow-headers", "content-type")
                    .header("access-control-max-age", "0");
            }
            t_tiktok.mark(tiktok_page(req), |a, now| {
                a.tiktok.get_or_insert(now);
            });
            cors(
                req,
                Response::ok("application/json", r#"{"code":0,"message":"OK"}"#),
            )
        })
        .route(META_JS, "/en_US/fbevents.js", Response::js(FBEVENTS_JS))
        .handler(META_JS, "/signals/config/", |_| Response::js(FB_CONFIG_JS))
        .handler(META_PIXEL, "/tr", move |req| {
            t_meta.mark(meta_page(req), |a, now| {
                a.meta.get_or_insert(now);
            });
            gif().header(
                "set-cookie",
                "fr=0bench; Domain=.facebook.com; Path=/; Max-Age=7776000; Secure; HttpOnly; SameSite=None",
            )
        })
        .handler(CHAT_JS, "/widget/", |_| Response::js(CHAT_WIDGET_JS))
        .handler(CHAT_WS, "/pubsub/", |_| Response::websocket())
}

/// PSS (kB) summed over this process and all its descendants.
fn tree_pss_kb() -> u64 {
    let me = std::process::id();
    let ppid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The field after the ")" of the command name: state, then ppid.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let parent_of: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, ppid(pid)?)))
        .collect();
    let in_tree = |mut pid: u32| loop {
        if pid == me {
            return true;
        }
        match parent_of.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    parent_of
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What one scan measured.
struct Run {
    label: String,
    concurrency: usize,
    report: ScanReport,
    wire: Vec<LoggedRequest>,
    arrivals: HashMap<String, Arrivals>,
    secs: f64,
    peak_mb: f64,
    load_before: String,
    load_after: String,
}

impl Run {
    fn pages_per_min(&self) -> f64 {
        self.report.pages.len() as f64 / self.secs * 60.0
    }
}

async fn measure(
    server: &FixtureServer,
    timeline: &Timeline,
    label: &str,
    pages: usize,
    concurrency: usize,
) -> Run {
    let opts = ScanOptions {
        start: format!("{ORIGIN}/"),
        max_pages: pages,
        max_depth: 50,
        max_per_pattern: pages,
        concurrency,
        sitemaps: false,
        browser_args: server.browser_args(),
        ..Default::default()
    };
    server.clear_log();
    timeline.take();
    let load_before = loadavg();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(tree_pss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t0 = Instant::now();
    let report = scan::run(&opts, Arc::new(Silent)).await.expect("scan runs");
    let secs = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    Run {
        label: label.to_string(),
        concurrency,
        report,
        wire: server.requests(),
        arrivals: timeline.take(),
        secs,
        peak_mb: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        load_before,
        load_after: loadavg(),
    }
}

fn path_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

fn is_tiktok_pixel(r: &Request) -> bool {
    r.host == TIKTOK && r.method == "POST" && path_of(&r.url) == "/api/v2/pixel"
}

fn is_meta_pixel(r: &Request) -> bool {
    r.host == META_PIXEL && path_of(&r.url).starts_with("/tr")
}

fn is_late_tag_script(r: &Request) -> bool {
    r.url
        .starts_with("https://analytics.tiktok.com/i18n/pixel/events.js")
        || r.url
            .starts_with("https://connect.facebook.net/en_US/fbevents.js")
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Milliseconds from serving a page's HTML to receiving one of its late pixels.
fn after_doc(a: &Arrivals, pixel: Option<Instant>) -> Option<u64> {
    Some(pixel?.checked_duration_since(a.doc?)?.as_millis() as u64)
}

/// Late-tag capture of one run: pages with both pixels in the report, and on the wire.
struct Capture {
    /// Pages whose report holds both late pixels.
    both: usize,
    tiktok: usize,
    meta: usize,
    /// Pages whose report holds both late tags' script loads.
    scripts: usize,
    /// Pages whose both late pixels reached the fixture server.
    wire_both: usize,
    /// Pages whose chat WebSocket said hello to the server.
    sockets: usize,
    /// Pages the report says set the Meta pixel's third-party `fr` cookie.
    fr_pages: usize,
    /// Pages missing a late pixel in the report.
    missed: Vec<usize>,
}

fn capture(run: &Run) -> Capture {
    let pages = &run.report.pages;
    let has = |p: &Page, f: fn(&Request) -> bool| p.requests.iter().any(f);
    let arrivals = |p: &Page| {
        run.arrivals
            .get(&p.url)
            .or_else(|| run.arrivals.get(&p.final_url))
            .copied()
            .unwrap_or_default()
    };
    let hellos: HashSet<String> = run
        .wire
        .iter()
        .filter(|r| r.method == "WS")
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|v| v["eventName"] == "hello")
        .filter_map(|v| v["url"].as_str().map(str::to_string))
        .collect();
    let count = |f: &dyn Fn(&Page) -> bool| pages.iter().filter(|p| f(p)).count();
    Capture {
        both: count(&|p| has(p, is_tiktok_pixel) && has(p, is_meta_pixel)),
        tiktok: count(&|p| has(p, is_tiktok_pixel)),
        meta: count(&|p| has(p, is_meta_pixel)),
        scripts: count(&|p| p.requests.iter().filter(|r| is_late_tag_script(r)).count() >= 2),
        wire_both: count(&|p| {
            let a = arrivals(p);
            a.tiktok.is_some() && a.meta.is_some()
        }),
        sockets: count(&|p| hellos.contains(&p.url) || hellos.contains(&p.final_url)),
        fr_pages: count(&|p| p.cookies.iter().any(|c| c.name == "fr")),
        missed: (0..pages.len())
            .filter(|&i| !(has(&pages[i], is_tiktok_pixel) && has(&pages[i], is_meta_pixel)))
            .collect(),
    }
}

fn print_run(run: &Run) {
    let r = &run.report;
    let s = &r.summary;
    let n = r.pages.len();
    println!(
        "\n== {} ({} tab{}), {} pages ==",
        run.label,
        run.concurrency,
        if run.concurrency == 1 { "" } else { "s" },
        n
    );
    println!(
        "  {:.1} s, {:.1} pages/min, peak PSS {:.0} MB, pages errored {}, load average {} -> {}",
        run.secs,
        run.pages_per_min(),
        run.peak_mb,
        s.pages_errored,
        run.load_before,
        run.load_after
    );
    let reasons: Vec<String> = ["quiet", "max", "timeout"]
        .iter()
        .map(|k| format!("{k} {}", s.settle_reasons.get(*k).copied().unwrap_or(0)))
        .collect();
    let settle = sorted(r.pages.iter().map(|p| p.settle_ms).collect());
    let mean = settle.iter().sum::<u64>() as f64 / settle.len().max(1) as f64;
    let load = sorted(r.pages.iter().map(|p| p.load_ms).collect());
    println!(
        "  settle reasons: {}; settle_ms mean {:.0}, p50 {}, p95 {}, max {}; load_ms (navigation to settled) p50 {}, p95 {}",
        reasons.join(", "),
        mean,
        pct(&settle, 50),
        pct(&settle, 95),
        settle.last().copied().unwrap_or(0),
        pct(&load, 50),
        pct(&load, 95),
    );
    let c = capture(run);
    println!(
        "  late tags captured: {} of {} pages (TikTok pixel {}, Meta pixel {}, both tag scripts {}; both pixels reached the server for {})",
        c.both, n, c.tiktok, c.meta, c.scripts, c.wire_both
    );
    let after_html = |f: fn(&Arrivals) -> Option<Instant>| {
        sorted(
            run.arrivals
                .values()
                .filter_map(|a| after_doc(a, f(a)))
                .collect(),
        )
    };
    let (tt, fb) = (after_html(|a| a.tiktok), after_html(|a| a.meta));
    println!(
        "  late pixels at the server, ms after the page's HTML: TikTok p50 {} p95 {}, Meta p50 {} p95 {} max {}",
        pct(&tt, 50),
        pct(&tt, 95),
        pct(&fb, 50),
        pct(&fb, 95),
        fb.last().copied().unwrap_or(0)
    );
    for &i in c.missed.iter().take(8) {
        let p = &r.pages[i];
        let a = run.arrivals.get(&p.url).copied().unwrap_or_default();
        let meta: Vec<String> = p
            .requests
            .iter()
            .filter(|q| q.host == META_JS || q.host == META_PIXEL)
            .map(|q| {
                format!(
                    "{} {} {:?}{}",
                    q.method,
                    path_of(&q.url),
                    q.status,
                    q.error
                        .as_deref()
                        .map(|e| format!(" {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        println!(
            "    missed {}: settle {} ms ({}), load_ms {}, forms {}; Meta pixel at the server: {}; recorded Meta requests: [{}]",
            path_of(&p.url),
            p.settle_ms,
            p.settle_reason.as_str(),
            p.load_ms,
            p.forms,
            after_doc(&a, a.meta).map_or("never".into(), |ms| format!("{ms} ms after its HTML")),
            meta.join(", ")
        );
    }
    let cookie = |name: &str| {
        r.cookies
            .iter()
            .find(|c| c.cookie.name == name)
            .map(|c| format!("{name} yes ({})", c.cookie.set_by))
            .unwrap_or_else(|| format!("{name} MISSING"))
    };
    let storage = r
        .pages
        .iter()
        .any(|p| p.storage.iter().any(|st| st.key == "tt_sessionId"));
    println!(
        "  late-tag cookies in report.cookies: {}, {}, {} (set on {} pages); tt_sessionId in storage: {}",
        cookie("_ttp"),
        cookie("_fbp"),
        cookie("fr"),
        c.fr_pages,
        if storage { "yes" } else { "MISSING" }
    );
    let form_pages = r.pages.iter().filter(|p| p.forms > 0).count();
    let probed = r.pages.iter().filter(|p| p.probed_fields > 0).count();
    println!(
        "  chat WebSocket said hello on {} of {} pages; forms probed on {} of {} form pages",
        c.sockets, n, probed, form_pages
    );
    let at_server = |f: fn(&LoggedRequest) -> bool| run.wire.iter().filter(|w| f(w)).count();
    let preflights = at_server(|w| w.method == "OPTIONS" && w.host == TIKTOK);
    let beats = at_server(|w| w.host == CLARITY_COLLECT);
    println!(
        "  requests recorded {} ({:.1}/page); at the server: {} preflights, {} heartbeats ({:.1}/page)",
        s.requests,
        s.requests as f64 / n.max(1) as f64,
        preflights,
        beats,
        beats as f64 / n.max(1) as f64
    );
    println!(
        "  health: cdp_events_dropped {}, cdp_decode_failures {}, browser_restarts {}, browser_replacements {}",
        s.cdp_events_dropped, s.cdp_decode_failures, s.browser_restarts, s.browser_replacements
    );
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let pages = env("BENCH_PAGES", 200).max(20);
    let baseline_pages = env("BENCH_BASELINE_PAGES", 20).clamp(1, pages);
    let defaults = ScanOptions::default();
    let mut levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_default();
    if levels.is_empty() {
        levels = vec![1, defaults.concurrency, 8];
    }
    levels.dedup();
    let timeline = Timeline::default();
    let server = FixtureServer::start(site(pages, &timeline))
        .await
        .expect("fixture server");
    println!(
        "crawl benchmark: a generated clinic site of {pages} pages ({} bytes of HTML on a typical page, \
         {} with an appointment form); every page: GTM injecting TikTok at 1 s and Meta at 2.5 s after \
         load, a keepalive JSON POST (preflighted), a sendBeacon pixel, a heartbeat every second, an \
         open chat WebSocket, 4 images, first-party CSS and JS",
        render_page(1, pages).len(),
        (0..pages).filter(|&n| has_form(n)).count()
    );
    println!(
        "settle: {} ms quiet, {} ms max; default concurrency {}; {} CPUs; load average at start {}",
        defaults.settle_quiet.as_millis(),
        defaults.settle_max.as_millis(),
        defaults.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let mut runs = Vec::new();
    for (i, &c) in levels.iter().enumerate() {
        let (label, n) = match i {
            0 => ("baseline".to_string(), baseline_pages),
            _ if c == defaults.concurrency => ("default concurrency".to_string(), pages),
            _ => (format!("{c} tabs"), pages),
        };
        let run = measure(&server, &timeline, &label, n, c).await;
        print_run(&run);
        runs.push(run);
    }
    println!(
        "\n{:<24} {:>6} {:>8} {:>10} {:>10} {:>10} {:>18} {:>11}",
        "run",
        "pages",
        "errored",
        "pages/min",
        "peak MB",
        "late tags",
        "quiet/max/timeout",
        "p95 settle"
    );
    for run in &runs {
        let s = &run.report.summary;
        let settle = sorted(run.report.pages.iter().map(|p| p.settle_ms).collect());
        let get = |k: &str| s.settle_reasons.get(k).copied().unwrap_or(0);
        println!(
            "{:<24} {:>6} {:>8} {:>10.1} {:>10.0} {:>10} {:>18} {:>8} ms",
            format!("{} ({})", run.label, run.concurrency),
            s.pages,
            s.pages_errored,
            run.pages_per_min(),
            run.peak_mb,
            format!("{}/{}", capture(run).both, s.pages),
            format!("{}/{}/{}", get("quiet"), get("max"), get("timeout")),
            pct(&settle, 95)
        );
    }
    if let Some(base) = runs.first() {
        for run in &runs[1..] {
            println!(
                "speed-up of {} tabs over {} tab(s): {:.2}x",
                run.concurrency,
                base.concurrency,
                run.pages_per_min() / base.pages_per_min()
            );
        }
    }
    println!("load average at end {}", loadavg());
}
