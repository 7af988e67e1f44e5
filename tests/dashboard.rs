//! The dashboard end to end, as its users meet it: real scans of fixture sites fill a SQLite
//! store, `pixelwatch dashboard` (the README's command) serves it, and the real headless
//! Chromium signs in, reads the overview and a site's page (history with drift, findings by
//! cause, the pages behind them), approves a baseline that the next `pixelwatch diff` uses,
//! mutes a finding that `diff` then lists, and scans now. A viewer cannot approve, a forged CSRF
//! token is refused, a hostile page title renders as text, and screenshots at a phone and a
//! desktop width show the verdict.

mod outputs_support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use outputs_support::{BIN, assert_exit, png_size, run, s, scan_command, text};
use pixelwatch::browser::{LaunchOptions, Viewer};
use pixelwatch::fixture::{FixtureServer, Response};
use pixelwatch::store::Store;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CALM: &str = "https://www.calm-clinic.test/";
const DEMO: &str = pixelwatch::demo::DEMO_URL;
/// A page title written to run script if anything turned it into markup.
const HOSTILE_TITLE: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>Our team";
const ALICE_PW: &str = "alice-approves-1";
const VICTOR_PW: &str = "victor-only-looks";

/// The demo clinic (leaking) plus a calm clinic whose home page carries the TikTok pixel only
/// once `pixel` is set, and whose team page has a hostile title.
fn sites(pixel: Arc<AtomicBool>) -> pixelwatch::fixture::Site {
    let h = "www.calm-clinic.test";
    pixelwatch::demo::site()
        .handler(h, "/team", |_| {
            Response::html(format!(
                "<!doctype html><html><head><title>{HOSTILE_TITLE}</title></head>\
                 <body><h1>Team</h1><a href=\"/\">Home</a></body></html>"
            ))
        })
        .handler(h, "/", move |_| {
            let tag = if pixel.load(Ordering::SeqCst) {
                "<script src=\"https://analytics.tiktok.com/i18n/pixel/events.js?sdkid=CALM\"></script>"
            } else {
                ""
            };
            Response::html(format!(
                "<!doctype html><html><head><title>Calm Clinic</title>{tag}</head>\
                 <body><h1>Welcome</h1><a href=\"/team\">Our team</a></body></html>"
            ))
        })
}

/// `pixelwatch ARGS` with `input` on standard input.
async fn run_with_stdin(args: &[String], input: &str) -> std::process::Output {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PIXELWATCH_DB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// `pixelwatch dashboard --db DB --listen 127.0.0.1:0` and the address it printed.
async fn start_dashboard(db: &str, extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["dashboard", "--db", db, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("PIXELWATCH_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the dashboard starts")
        .unwrap()
        .expect("a line");
    let base = line
        .strip_prefix("pixelwatch dashboard on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .trim_end_matches('/')
        .to_string();
    (child, base)
}

/// A fresh browser (own profile, own cookies) on the dashboard.
struct Browser {
    viewer: Viewer,
    base: String,
}

impl Browser {
    async fn launch(base: &str) -> Browser {
        let viewer = Viewer::launch(&LaunchOptions {
            executable: None,
            // The dashboard needs nothing but itself.
            extra_args: vec!["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into()],
            ..Default::default()
        })
        .await
        .expect("Chromium starts");
        Browser {
            viewer,
            base: base.to_string(),
        }
    }

    async fn open(&mut self, path: &str) {
        let url = format!("{}{path}", self.base);
        assert!(
            self.viewer.open(&url, Duration::from_secs(20)).await,
            "{url} loads"
        );
    }

    async fn eval(&self, js: &str) -> Value {
        self.viewer.evaluate(js).await.unwrap()
    }

    /// Runs `js` (which submits a form) and waits until a new document has loaded.
    async fn submit(&self, js: &str) {
        self.eval("window.__before = 1").await;
        self.eval(js).await;
        let start = Instant::now();
        loop {
            let v = self
                .viewer
                .evaluate("!window.__before && document.readyState === 'complete'")
                .await;
            if matches!(v, Ok(Value::Bool(true))) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no new page after: {js}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn page(&self) -> String {
        self.eval("document.body.dataset.page")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn sign_in(&mut self, user: &str, password: &str) {
        self.open("/").await;
        assert_eq!(
            self.page().await,
            "login",
            "signed-out visitors get the sign-in form"
        );
        self.submit(&format!(
            "document.querySelector('input[name=user]').value = {};
             document.querySelector('input[name=password]').value = {};
             document.querySelector('form.login button').click()",
            Value::from(user),
            Value::from(password)
        ))
        .await;
        let body = self.eval("document.body.innerText").await;
        assert_eq!(self.page().await, "overview", "{user} signed in: {body}");
    }
}

fn site_path(site: &str) -> String {
    format!(
        "/site?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", site)
            .finish()
    )
}

/// What the overview shows, read from the DOM.
const OVERVIEW: &str = r#"(() => {
const q = s => Array.from(document.querySelectorAll(s));
return {
  rows: q('tr.site').map(r => ({
    site: r.dataset.site, verdict: r.dataset.verdict,
    cells: Array.from(r.cells).map(c => c.textContent.trim()),
    spark: r.querySelectorAll('svg.spark polyline').length,
  })),
  count: document.getElementById('site-count').textContent,
  scripts: q('script').length,
  external: q('[src],link[href]').map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !u.startsWith('/') && u !== 'data:,'),
};
})()"#;

/// What a site's page shows.
const SITE: &str = r#"(() => {
const q = s => Array.from(document.querySelectorAll(s));
const t = s => { const e = document.querySelector(s); return e ? e.textContent.trim() : null; };
return {
  verdict: t('#verdict'),
  baseline: t('#baseline-info'),
  history: q('tr.scan').map(r => ({ scan: +r.dataset.scan, cells: Array.from(r.cells).map(c => c.textContent.trim()),
    links: Array.from(r.querySelectorAll('a')).map(a => a.getAttribute('href')) })),
  causes: q('article.cause').map(a => ({ kind: a.dataset.kind, muted: a.dataset.muted,
    head: a.querySelector('h3').textContent.trim(), behind: a.querySelectorAll('table.behind tr').length - 1 })),
  titles: q('td.title').map(c => c.textContent),
  injected: q('main img, main script').length,
  approve: q('form[action="/site/approve"]').length,
  viewerNote: t('#viewer-note'),
  mutes: q('table.mutes tr[data-mute]').map(r => r.textContent),
  activity: q('table.activity tr').map(r => r.textContent),
  title: document.title,
};
})()"#;

/// Whether the verdict badge `selector` is on the first screen and not covered or hidden.
fn verdict_visible(selector: &str) -> String {
    format!(
        r#"(() => {{
const b = document.querySelector('{selector}');
const r = b.getBoundingClientRect();
const style = getComputedStyle(b);
const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
return {{ top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height,
  innerWidth, innerHeight, text: b.textContent, pageWidth: document.documentElement.scrollWidth,
  visible: style.visibility === 'visible' && style.display !== 'none' && +style.opacity > 0,
  onTop: hit === b || b.contains(hit) }};
}})()"#
    )
}

async fn diff(db: &str, site: &str) -> std::process::Output {
    run(&s(&["diff", "--site", site, "--db", db])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_sees_verdicts_approves_a_baseline_and_diff_uses_it() {
    let pixel = Arc::new(AtomicBool::new(false));
    let server = FixtureServer::start(sites(pixel.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pw.db").display().to_string();

    // Real scans: the calm clinic without the pixel, the demo clinic, the calm clinic with it.
    assert_exit(&run(&scan_command("scan", CALM, &db, &server)).await, 0);
    let demo = run(&scan_command("scan", DEMO, &db, &server)).await;
    assert!(
        demo.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&demo.stderr)
    );
    pixel.store(true, Ordering::SeqCst);
    let second = run(&scan_command("scan", CALM, &db, &server)).await;
    assert!(
        second.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&second.stderr)
    );
    let store = Store::open(std::path::Path::new(&db)).await.unwrap();
    let calm_scans: Vec<i64> = store
        .list_scans(Some(CALM), 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let [c2, c1] = calm_scans[..] else {
        panic!("two scans of the calm clinic: {calm_scans:?}")
    };
    // The calm clinic is stored with a schedule and its scan settings, so it has a next scan
    // and "Scan now" can run it.
    let mut add = s(&["sites", "add", CALM, "--schedule", "0 3 * * *", "--db", &db]);
    add.extend(s(&[
        "--no-sitemap",
        "--settle-quiet",
        "200",
        "--settle-max",
        "1500",
    ]));
    add.extend(
        server
            .browser_args()
            .into_iter()
            .map(|a| format!("--browser-arg={a}")),
    );
    assert_exit(&run(&add).await, 0);

    // Accounts: passwords on standard input, never in a flag.
    let add_user = |name: &str, role: &str| s(&["users", "add", name, "--role", role, "--db", &db]);
    assert_exit(
        &run_with_stdin(&add_user("alice", "approver"), &format!("{ALICE_PW}\n")).await,
        0,
    );
    assert_exit(
        &run_with_stdin(&add_user("victor", "viewer"), &format!("{VICTOR_PW}\n")).await,
        0,
    );
    let stored = std::fs::read(&db).unwrap();
    assert!(
        !stored
            .windows(ALICE_PW.len())
            .any(|w| w == ALICE_PW.as_bytes()),
        "a password is stored in clear"
    );

    let (_dashboard, base) = start_dashboard(&db, &[]).await;

    // Without a session only /healthz answers.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    for path in [
        "/".to_string(),
        site_path(CALM),
        format!("/scan/{c1}/report.json"),
        format!("/scan/{c1}/report.html"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path} without a session");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?next=")
        );
    }
    let r = http
        .post(format!("{base}/site/approve"))
        .form(&[("site", CALM), ("scan", &c1.to_string()), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a POST without a session");
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let csp = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    // Alice signs in and sees every site's verdict.
    let mut alice = Browser::launch(&base).await;
    alice.sign_in("alice", ALICE_PW).await;
    let ov = alice.eval(OVERVIEW).await;
    let rows = ov["rows"].as_array().unwrap();
    let verdict = |site: &str| {
        rows.iter()
            .find(|r| r["site"] == site)
            .unwrap_or_else(|| panic!("{site} on the overview: {ov}"))["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict(DEMO), "leaking", "{ov}");
    assert_eq!(verdict(CALM), "drifted", "no baseline yet: {ov}");
    assert_eq!(rows[0]["site"], DEMO, "worst first: {ov}");
    assert!(
        rows.iter().all(|r| r["spark"] == 1),
        "a sparkline per site: {ov}"
    );
    let demo_cells = rows[0]["cells"].as_array().unwrap();
    assert!(
        demo_cells[2].as_str().unwrap().contains("phi_leak"),
        "worst finding: {ov}"
    );
    assert!(
        demo_cells[3].as_str().unwrap().contains("TikTok"),
        "no-BAA vendors: {ov}"
    );
    let calm_row = rows.iter().find(|r| r["site"] == CALM).unwrap();
    assert!(
        calm_row["cells"][5].as_str().unwrap().contains("0 3 * * *"),
        "next scan: {ov}"
    );
    assert_eq!(ov["scripts"], 0, "no script: {ov}");
    assert_eq!(
        ov["external"].as_array().unwrap().len(),
        0,
        "nothing external: {ov}"
    );
    // Filter and sort.
    alice.open("/?q=calm").await;
    let filtered = alice.eval(OVERVIEW).await;
    assert_eq!(filtered["rows"].as_array().unwrap().len(), 1, "{filtered}");
    assert_eq!(filtered["rows"][0]["site"], CALM);
    alice.open("/?sort=site").await;
    let by_name = alice.eval(OVERVIEW).await;
    assert_eq!(by_name["rows"][0]["site"], CALM, "{by_name}");

    // Screenshots at a phone and a desktop width: the verdict is on the first screen.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let demo_page = site_path(DEMO);
    let screens = [
        ("phone", 390, 844, true, "overview", "/", "tr.site .verdict"),
        (
            "desktop",
            1280,
            900,
            false,
            "overview",
            "/",
            "tr.site .verdict",
        ),
        (
            "phone",
            390,
            844,
            true,
            "site",
            demo_page.as_str(),
            "#verdict .verdict",
        ),
        (
            "desktop",
            1280,
            900,
            false,
            "site",
            demo_page.as_str(),
            "#verdict .verdict",
        ),
    ];
    for (device, w, h, mobile, page, path, badge) in screens {
        let name = format!("{page} on a {device}");
        alice.viewer.resize(w, h, mobile).await.unwrap();
        alice.open(path).await;
        let v = alice.eval(&verdict_visible(badge)).await;
        let png = shots.join(format!("dashboard-{page}-{device}.png"));
        std::fs::write(&png, alice.viewer.screenshot().await.unwrap()).unwrap();
        assert_eq!(png_size(&png), (w, h), "{name} screenshot size");
        assert_eq!(v["text"], "leaking", "{name}: {v}");
        assert!(
            v["visible"] == true && v["onTop"] == true,
            "{name}: hidden verdict {v}"
        );
        assert!(v["width"].as_f64().unwrap() > 10.0, "{name}: {v}");
        assert!(
            v["top"].as_f64().unwrap() >= 0.0 && v["bottom"].as_f64().unwrap() <= h as f64,
            "{name}: the verdict is off the first screen: {v}"
        );
        assert!(
            v["right"].as_f64().unwrap() <= w as f64
                && v["pageWidth"].as_f64().unwrap() <= w as f64,
            "{name}: sideways: {v}"
        );
    }

    // The calm clinic's page: history with the drift between its scans, findings by cause
    // with what is behind them, reports, and the hostile title as text.
    alice.open(&site_path(CALM)).await;
    assert_eq!(alice.page().await, "site");
    let p = alice.eval(SITE).await;
    let hist = p["history"].as_array().unwrap();
    assert_eq!(hist.len(), 2, "{p}");
    assert_eq!(hist[0]["scan"], c2);
    let step = hist[0]["cells"][4].as_str().unwrap();
    assert!(
        step.starts_with('+') && !step.starts_with("+0"),
        "drift between scans: {p}"
    );
    assert!(step.contains("tiktok"), "{p}");
    assert_eq!(hist[1]["cells"][4], "first scan");
    assert_eq!(
        hist[0]["links"],
        serde_json::json!([
            format!("/scan/{c2}/report.html"),
            format!("/scan/{c2}/report.json")
        ])
    );
    assert!(
        p["baseline"].as_str().unwrap().starts_with("No baseline"),
        "{p}"
    );
    let causes = p["causes"].as_array().unwrap();
    assert!(!causes.is_empty(), "{p}");
    assert!(
        causes
            .iter()
            .any(|c| c["head"].as_str().unwrap().contains("TikTok")),
        "{p}"
    );
    assert!(
        causes.iter().all(|c| c["behind"].as_u64().unwrap() >= 1),
        "{p}"
    );
    assert!(
        p["titles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().contains("<img src=x onerror=")),
        "the hostile title shows as text: {p}"
    );
    assert_eq!(p["injected"], 0, "{p}");
    assert!(!p["title"].as_str().unwrap().contains("pwned"), "{p}");
    // The stored reports, signed in.
    alice.open(&format!("/scan/{c2}/report.json")).await;
    let body = alice.eval("document.body.innerText").await;
    let json: Value = serde_json::from_str(body.as_str().unwrap()).unwrap();
    let json = format!(
        "{} {}",
        json["schema"].as_str().unwrap(),
        json["site"].as_str().unwrap()
    );
    assert_eq!(json, format!("pixelwatch.scan/v1 {CALM}"));
    alice.open(&format!("/scan/{c2}/report.html")).await;
    assert!(
        alice
            .eval("document.getElementById('verdict') !== null")
            .await
            == true
    );

    // Approve the first scan from its history row: `diff` now judges against it (drift: 2).
    alice.open(&site_path(CALM)).await;
    alice
        .submit(&format!(
            "document.querySelector('tr.scan[data-scan=\"{c1}\"] form[action=\"/site/approve\"] button').click()"
        ))
        .await;
    let p = alice.eval(SITE).await;
    let info = p["baseline"].as_str().unwrap();
    assert!(
        info.contains(&format!("Scan #{c1}")) && info.contains("by alice"),
        "{p}"
    );
    let d = diff(&db, CALM).await;
    assert_exit(&d, 2);
    assert!(text(&d.stdout).contains("tiktok"), "{}", text(&d.stdout));

    // A forged CSRF token is refused, and nothing changes.
    alice
        .submit(
            "const f = document.getElementById('approve-latest').form;
             f.querySelector('input[name=csrf]').value = 'f'.repeat(64);
             f.querySelector('button').click()",
        )
        .await;
    assert_eq!(alice.page().await, "message");
    let msg = alice
        .eval("document.getElementById('message').textContent")
        .await;
    assert!(
        msg.as_str()
            .unwrap()
            .contains("did not come from your session"),
        "{msg}"
    );
    assert_eq!(store.baseline(CALM).await.unwrap().scan_id, Some(c1));

    // Mute the TikTok tracker cause with a reason: `diff` lists it as muted, by whom and why.
    alice.open(&site_path(CALM)).await;
    alice
        .submit(
            "const f = Array.from(document.querySelectorAll('article.cause'))
               .find(a => a.querySelector('h3').textContent.includes('TikTok'))
               .querySelector('form.mute');
             f.querySelector('input[name=reason]').value = 'Pixel removed in next release <b>x</b>';
             f.querySelector('input[name=days]').value = '7';
             f.querySelector('button').click()",
        )
        .await;
    let p = alice.eval(SITE).await;
    let mutes = p["mutes"].as_array().unwrap();
    assert_eq!(mutes.len(), 1, "{p}");
    assert!(
        mutes[0]
            .as_str()
            .unwrap()
            .contains("Pixel removed in next release <b>x</b>"),
        "{p}"
    );
    assert!(
        p["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["muted"] == "true"),
        "{p}"
    );
    let d = diff(&db, CALM).await;
    let out = text(&d.stdout);
    assert!(
        out.contains("muted") && out.contains("muted by alice"),
        "{out}"
    );
    // The stored HTML report lists the mute where it applies: nothing is hidden silently.
    alice.open(&format!("/scan/{c2}/report.html")).await;
    let listed = alice
        .eval("Array.from(document.querySelectorAll('.muted')).map(e => e.textContent).join('|')")
        .await;
    assert!(
        listed.as_str().unwrap().contains("Muted by alice until")
            && listed
                .as_str()
                .unwrap()
                .contains("Pixel removed in next release <b>x</b>"),
        "{listed}"
    );
    alice.open(&site_path(CALM)).await;

    // Approve the latest scan: the next `diff` uses it and finds no drift.
    alice
        .submit("document.getElementById('approve-latest').click()")
        .await;
    let p = alice.eval(SITE).await;
    assert!(
        p["baseline"]
            .as_str()
            .unwrap()
            .contains(&format!("Scan #{c2}")),
        "{p}"
    );
    assert_eq!(store.baseline(CALM).await.unwrap().scan_id, Some(c2));
    let d = diff(&db, CALM).await;
    assert_exit(&d, 0);
    assert!(text(&d.stdout).contains("No drift"), "{}", text(&d.stdout));

    // A viewer sees the same page without the actions, and cannot approve by posting the form
    // with their own valid token.
    let mut victor = Browser::launch(&base).await;
    victor.sign_in("victor", VICTOR_PW).await;
    victor.open(&site_path(CALM)).await;
    let p = victor.eval(SITE).await;
    assert_eq!(p["approve"], 0, "{p}");
    assert!(p["viewerNote"].as_str().is_some(), "{p}");
    victor
        .submit(&format!(
            "const token = document.querySelector('form[action=\"/logout\"] input[name=csrf]').value;
             const f = document.createElement('form');
             f.method = 'post'; f.action = '/site/approve';
             for (const [k, v] of [['csrf', token], ['site', {site}], ['scan', '{c1}']]) {{
               const i = document.createElement('input'); i.name = k; i.value = v; f.append(i);
             }}
             document.body.append(f); f.submit()",
            site = Value::from(CALM)
        ))
        .await;
    assert_eq!(victor.page().await, "message");
    let msg = victor
        .eval("document.getElementById('message').textContent")
        .await;
    assert!(msg.as_str().unwrap().contains("Only an approver"), "{msg}");
    assert_eq!(store.baseline(CALM).await.unwrap().scan_id, Some(c2));

    // Scan now (SQLite: the dashboard runs it with the stored site's settings).
    alice.open(&site_path(CALM)).await;
    alice
        .submit("document.getElementById('scan-now').click()")
        .await;
    let start = Instant::now();
    while store.list_scans(Some(CALM), 10).await.unwrap().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the dashboard's scan never landed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every action is recorded with who and when.
    let actions = store.actions(Some(CALM), 50).await.unwrap();
    let did = |who: &str, what: &str| {
        actions
            .iter()
            .filter(|a| a.actor == who && a.action == what)
            .count()
    };
    assert_eq!(did("alice", "approve_baseline"), 2, "{actions:?}");
    assert_eq!(did("alice", "mute"), 1, "{actions:?}");
    assert_eq!(did("alice", "scan_now"), 1, "{actions:?}");
    assert_eq!(did("victor", "approve_baseline"), 0, "{actions:?}");
    assert!(actions.iter().all(|a| !a.at.is_empty()));

    // The activity page: everyone's actions, accounts included.
    alice.open("/activity").await;
    let rows = alice
        .eval("Array.from(document.querySelectorAll('table.activity tr')).map(r => r.textContent).join('\\n')")
        .await;
    let rows = rows.as_str().unwrap();
    for what in [
        "sign_in",
        "approve_baseline",
        "mute",
        "scan_now",
        "user_add",
    ] {
        assert!(rows.contains(what), "{what} in the activity:\n{rows}");
    }
    assert!(rows.contains("victor"), "{rows}");

    alice.viewer.close().await;
    victor.viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_dashboard_command_trusts_only_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db").display().to_string();
    let (_dashboard, base) = start_dashboard(&db, &["--auth-header", "X-Forwarded-User"]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no header, no entry");
    let r = http
        .get(format!("{base}/"))
        .header("X-Forwarded-User", "pat")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("pat · viewer"));
    let users = run(&s(&["users", "list", "--db", &db])).await;
    assert!(
        text(&users.stdout).contains("proxy"),
        "{}",
        text(&users.stdout)
    );
}
