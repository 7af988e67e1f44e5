//! The fleet as an operator runs it: a real PostgreSQL started by the harness, `pixelwatch
//! worker` and `pixelwatch scheduler` processes, fixture clinic sites scanned in real Chromium,
//! a real SMTP server. Two workers share 20 sites and scan each once; a worker killed with
//! SIGKILL mid-scan loses its job to the other, which sends the one alert; two schedulers queue
//! each due time once across a failover; PostgreSQL restarted mid-run and the workers recover.

mod alert_support;
mod outputs_support;
mod pg_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alert_support::SmtpSink;
use outputs_support::descendants;
use pg_support::{PgServer, free_port};
use pixelwatch::fixture::{FixtureServer, Response, Site};
use pixelwatch::settings::ScanSettings;
use pixelwatch::store::Store;
use pixelwatch::store::jobs::JobState;
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");

/// The tests of this binary run one at a time: each starts browsers of its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `pixelwatch` process with its log lines collected.
struct Proc {
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[String]) -> Proc {
        let mut child = tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("PIXELWATCH_DB")
            .env("PIXELWATCH_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, err) = (log.clone(), child.stderr.take().unwrap());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                l.lock().unwrap().push(line);
            }
        });
        Proc { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn lines(&self, containing: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(containing))
            .count()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL, as a lost machine. Its browsers die with it (parent-death signal; asserted in
    /// tests/cli.rs); any left over are killed too, so a regression there cannot leak here.
    async fn kill9(&mut self) {
        let pid = self.pid();
        let orphans = descendants(pid);
        // SAFETY: signalling processes this test started, by pid.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = self.child.wait().await;
        for p in orphans {
            // SAFETY: as above; a pid that already exited is harmless to signal.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }

    /// SIGTERM, and the exit status.
    async fn stop(&mut self) -> Option<i32> {
        // SAFETY: signalling the process this test started, by its pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits promptly on SIGTERM")
            .unwrap()
            .code()
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn host(i: usize) -> String {
    format!("site{i:02}.fleet.test")
}

/// `n` one-page clinics; `pixel` puts a TikTok pixel on each.
fn clinics(n: usize, pixel: bool, delay: Option<Duration>) -> Site {
    let mut site = Site::new().route(
        "analytics.tiktok.com",
        "/i18n/pixel/events.js",
        Response::js("1;"),
    );
    for i in 0..n {
        let head = if pixel {
            r#"<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>"#
        } else {
            ""
        };
        let mut page = Response::html(format!(
            "<html><head><title>Clinic {i}</title>{head}</head><body><h1>Clinic {i}</h1></body></html>"
        ));
        if let Some(d) = delay {
            page = page.delayed(d);
        }
        site = site.route(&host(i), "/", page);
    }
    site
}

/// Settings that keep each scan small and quick.
fn small(server: &FixtureServer) -> ScanSettings {
    ScanSettings {
        sitemaps: Some(false),
        concurrency: Some(1),
        settle_quiet_ms: Some(200),
        settle_max_ms: Some(1500),
        browser_args: Some(server.browser_args()),
        ..Default::default()
    }
}

/// A new database on the shared test server: its URL and the store.
async fn fresh_store() -> (String, Store) {
    let url = PgServer::shared().fresh_db().await;
    let store = Store::open(url.parse::<pixelwatch::store::DbTarget>().unwrap())
        .await
        .unwrap();
    (url, store)
}

async fn add_sites(store: &Store, n: usize, server: &FixtureServer) {
    for i in 0..n {
        store
            .add_site(
                &format!("https://{}/", host(i)),
                "0 3 * * *",
                &small(server),
            )
            .await
            .unwrap();
    }
}

async fn queue_all(store: &Store) {
    for s in store.sites().await.unwrap() {
        assert!(store.enqueue_now(&s, 3).await.unwrap());
    }
}

async fn count(store: &Store, state: JobState) -> usize {
    store
        .list_jobs(Some(state), 10_000)
        .await
        .map(|j| j.len())
        .unwrap_or(0)
}

fn worker(url: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = [
        "worker",
        "--db",
        url,
        "--poll-ms",
        "200",
        "--retry-delay",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_twenty_sites_and_scan_each_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = FixtureServer::start(clinics(20, false, None))
        .await
        .unwrap();
    let (url, store) = fresh_store().await;
    add_sites(&store, 20, &server).await;
    queue_all(&store).await;
    let ports = [free_port(), free_port()];
    let mut workers: Vec<Proc> = ports
        .iter()
        .map(|p| worker(&url, &["--metrics-addr", &format!("127.0.0.1:{p}")]))
        .collect();
    wait_for("20 jobs done", Duration::from_secs(240), || async {
        count(&store, JobState::Done).await == 20
    })
    .await;
    // Every site once: one scan each, one attempt each, nothing failed.
    let scans = store.list_scans(None, 1000).await.unwrap();
    assert_eq!(scans.len(), 20);
    let mut sites: Vec<&str> = scans.iter().map(|s| s.site.as_str()).collect();
    sites.sort();
    sites.dedup();
    assert_eq!(sites.len(), 20, "each site scanned once");
    let jobs = store.list_jobs(None, 100).await.unwrap();
    assert!(
        jobs.iter()
            .all(|j| j.attempts == 1 && j.outcome.as_deref() == Some("ok")),
        "{jobs:?}"
    );
    // Both workers took part, and their metrics add up.
    let mut ok_total = 0.0;
    for (w, port) in workers.iter().zip(ports) {
        let owner = format!(":{}", w.pid());
        let ran = jobs
            .iter()
            .filter(|j| {
                j.lease_owner
                    .as_deref()
                    .is_some_and(|o| o.ends_with(&owner))
            })
            .count();
        assert!(ran > 0, "worker {} ran no job:\n{}", w.pid(), w.log());
        let m = metrics(port).await;
        let ok = metric(&m, "pixelwatch_scans_total{outcome=\"ok\"}");
        assert_eq!(ok as usize, ran, "{m}");
        ok_total += ok;
        assert!(metric(&m, "pixelwatch_pages_total") >= ok, "{m}");
        assert!(m.contains("# TYPE pixelwatch_queue_depth gauge"), "{m}");
        assert!(m.contains("pixelwatch_queue_oldest_due_age_seconds"), "{m}");
        assert!(
            m.contains("# TYPE pixelwatch_pages_per_minute gauge"),
            "{m}"
        );
    }
    assert_eq!(ok_total, 20.0);
    for w in &mut workers {
        assert_eq!(w.stop().await, Some(0), "{}", w.log());
    }
}

/// One clinic with a TikTok pixel whose page takes `delay` to answer, an SMTP server, and worker
/// A (lease of `lease` seconds) in the middle of scanning it.
struct Midscan {
    /// Kept alive for the workers' browsers.
    _server: FixtureServer,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
    /// The alert config file for workers.
    cfg: String,
    url: String,
    store: Store,
    worker: Proc,
}

async fn mid_scan(delay: Duration, lease: &str) -> Midscan {
    let server = FixtureServer::start(clinics(1, true, Some(delay)))
        .await
        .unwrap();
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alerts.toml");
    std::fs::write(
        &cfg,
        format!(
            "[retry]\nattempts = 2\nbackoff_ms = 50\n\n{}",
            sink.email_toml()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let (url, store) = fresh_store().await;
    add_sites(&store, 1, &server).await;
    queue_all(&store).await;
    let a = worker(&url, &["--lease", lease, "--config", &cfg]);
    wait_for(
        "worker A to be mid-scan",
        Duration::from_secs(60),
        || async { count(&store, JobState::Running).await == 1 && !server.requests().is_empty() },
    )
    .await;
    Midscan {
        _server: server,
        sink,
        _dir: dir,
        cfg,
        url,
        store,
        worker: a,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_scan_loses_its_job_to_another_and_one_alert_is_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut m = mid_scan(Duration::from_secs(4), "3").await;
    m.worker.kill9().await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut b = worker(
        &m.url,
        &["--lease", "3", "--config", &m.cfg, "--metrics-addr", &addr],
    );
    wait_for(
        "the job done by worker B",
        Duration::from_secs(90),
        || async { count(&m.store, JobState::Done).await == 1 },
    )
    .await;
    let job = &m.store.list_jobs(None, 10).await.unwrap()[0];
    assert_eq!(job.attempts, 2, "{job:?}");
    assert!(
        job.lease_owner
            .as_deref()
            .is_some_and(|o| o.ends_with(&format!(":{}", b.pid()))),
        "{job:?}"
    );
    assert_eq!(m.store.list_scans(None, 10).await.unwrap().len(), 1);
    wait_for("the drift email", Duration::from_secs(30), || async {
        !m.sink.messages().is_empty()
    })
    .await;
    // Give a second sender every chance to appear: none does.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(m.sink.messages().len(), 1, "one alert, not two");
    let alerts = m.store.list_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].status, "sent");
    assert!(b.lines("lease expired") >= 1, "{}", b.log());
    let metrics = metrics(port).await;
    assert_eq!(
        metric(
            &metrics,
            "pixelwatch_alert_sends_total{channel=\"email\",result=\"sent\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(b.stop().await, Some(0), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_lost_its_lease_stores_nothing_and_sends_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut m = mid_scan(Duration::from_secs(3), "2").await;
    // Freeze A (and its browser) past its lease; B takes the job over and finishes it.
    let frozen: Vec<u32> = std::iter::once(m.worker.pid())
        .chain(descendants(m.worker.pid()))
        .collect();
    for p in &frozen {
        // SAFETY: signalling processes this test started, by pid.
        unsafe { libc::kill(*p as i32, libc::SIGSTOP) };
    }
    let mut b = worker(&m.url, &["--lease", "2", "--config", &m.cfg]);
    wait_for(
        "the job done by worker B",
        Duration::from_secs(90),
        || async { count(&m.store, JobState::Done).await == 1 },
    )
    .await;
    wait_for("B's email", Duration::from_secs(30), || async {
        !m.sink.messages().is_empty()
    })
    .await;
    assert_eq!(b.stop().await, Some(0), "{}", b.log());
    // A wakes up believing it still scans: it finds its lease gone and stores nothing.
    for p in &frozen {
        // SAFETY: as above.
        unsafe { libc::kill(*p as i32, libc::SIGCONT) };
    }
    wait_for("A to notice", Duration::from_secs(30), || async {
        m.worker.lines("lease lost") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        m.store.list_scans(None, 10).await.unwrap().len(),
        1,
        "{}",
        m.worker.log()
    );
    assert_eq!(m.sink.messages().len(), 1, "one alert, not two");
    assert_eq!(m.worker.stop().await, Some(0), "{}", m.worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_queue_each_due_time_once_across_a_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (url, store) = fresh_store().await;
    for s in ["https://a.fleet.test/", "https://b.fleet.test/"] {
        store
            .add_site(s, "* * * * * *", &ScanSettings::default())
            .await
            .unwrap();
    }
    let args: Vec<String> = ["scheduler", "--db", &url, "--tick-ms", "200"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut s1 = Proc::spawn(&args);
    let mut s2 = Proc::spawn(&args);
    wait_for("a leader", Duration::from_secs(20), || async {
        s1.lines("leading") + s2.lines("leading") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The leader dies; the standby takes over.
    let (leader, standby) = if s1.lines("leading") == 1 {
        (&mut s1, &mut s2)
    } else {
        (&mut s2, &mut s1)
    };
    leader.kill9().await;
    wait_for("the standby to lead", Duration::from_secs(20), || async {
        standby.lines("leading") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(standby.stop().await, Some(0), "{}", standby.log());
    let queued_by_leader = leader.lines(" queued");
    let queued_by_standby = standby.lines(" queued");
    assert!(queued_by_leader > 0 && queued_by_standby > 0);

    let jobs = store.list_jobs(None, 10_000).await.unwrap();
    assert_eq!(
        jobs.len(),
        queued_by_leader + queued_by_standby,
        "every 'queued' is a job of its own: no due time was queued twice"
    );
    for site in ["https://a.fleet.test/", "https://b.fleet.test/"] {
        let mut due: Vec<chrono::DateTime<chrono::Utc>> = jobs
            .iter()
            .filter(|j| j.site == site)
            .map(|j| j.due_at.parse().unwrap())
            .collect();
        due.sort();
        assert!(due.len() >= 6, "{site}: {due:?}");
        for w in due.windows(2) {
            assert_eq!(
                (w[1] - w[0]).num_seconds(),
                1,
                "{site}: each second once, none missed across the failover: {due:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recover_when_postgres_restarts_mid_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pg = PgServer::start_new();
    let url = pg.fresh_db().await;
    let server = FixtureServer::start(clinics(6, false, Some(Duration::from_millis(700))))
        .await
        .unwrap();
    let store = Store::open(&url.parse::<pixelwatch::store::DbTarget>().unwrap())
        .await
        .unwrap();
    add_sites(&store, 6, &server).await;
    queue_all(&store).await;
    drop(store);
    let mut w = worker(&url, &["--lease", "20"]);
    let store = Store::open(&url.parse::<pixelwatch::store::DbTarget>().unwrap())
        .await
        .unwrap();
    wait_for("a first job done", Duration::from_secs(120), || async {
        count(&store, JobState::Done).await >= 1
    })
    .await;
    pg.stop_immediate();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.start();
    wait_for(
        "every job done after the restart",
        Duration::from_secs(180),
        || async { count(&store, JobState::Done).await == 6 },
    )
    .await;
    assert_eq!(count(&store, JobState::Failed).await, 0);
    let mut sites: Vec<String> = store
        .list_scans(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.site)
        .collect();
    sites.sort();
    sites.dedup();
    assert_eq!(sites.len(), 6, "every site has its scan");
    assert!(
        w.lines("cannot") >= 1,
        "the worker saw the outage:\n{}",
        w.log()
    );
    assert_eq!(w.stop().await, Some(0), "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_queues_each_due_time_once_and_skips_what_is_past_the_catch_up() {
    use pixelwatch::fleet::scheduler::{SchedulerOptions, enqueue_due};
    let opts = SchedulerOptions {
        tick: Duration::from_millis(200),
        catch_up: Duration::from_secs(3600),
        max_attempts: 3,
    };
    let (_, store) = fresh_store().await;
    store
        .add_site(
            "https://s.fleet.test/",
            "* * * * * *",
            &ScanSettings::default(),
        )
        .await
        .unwrap();
    let now = chrono::Utc::now() + chrono::Duration::seconds(10);
    let first = enqueue_due(&store, now, &opts).await.unwrap();
    assert!((9..=11).contains(&first), "{first}");
    assert_eq!(
        enqueue_due(&store, now, &opts).await.unwrap(),
        0,
        "queued once"
    );
    let later = now + chrono::Duration::seconds(5);
    assert_eq!(enqueue_due(&store, later, &opts).await.unwrap(), 5);
    assert_eq!(store.list_jobs(None, 100).await.unwrap().len(), first + 5);

    // Every scheduler was down for three hours: only the last hour is queued.
    let (_, store) = fresh_store().await;
    store
        .add_site(
            "https://m.fleet.test/",
            "* * * * *",
            &ScanSettings::default(),
        )
        .await
        .unwrap();
    let then = chrono::Utc::now() + chrono::Duration::hours(3);
    assert_eq!(enqueue_due(&store, then, &opts).await.unwrap(), 60);
    let jobs = store.list_jobs(None, 100).await.unwrap();
    let oldest: chrono::DateTime<chrono::Utc> = jobs.last().unwrap().due_at.parse().unwrap();
    assert!(oldest > then - chrono::Duration::hours(1), "{oldest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_judges_of_the_same_drift_at_once_record_one_alert() {
    use pixelwatch::alert::history::{Decision, record_drift};
    let (_, store) = fresh_store().await;
    let site = "https://j.fleet.test/";
    let mut alert = pixelwatch::alert::Alert::site_down(site, 1, "x");
    alert.kind = "drift".into();
    alert.fingerprint = "same drift".into();
    // Both transactions read "nothing alerted yet" before either commits.
    let mut first = store.db().begin().await.unwrap();
    let one = record_drift(&mut first, site, Some(&alert), &["email"])
        .await
        .unwrap();
    let (db, a) = (store.clone(), alert.clone());
    let second = tokio::spawn(async move {
        let mut tx = db.db().begin().await.unwrap();
        let d = record_drift(&mut tx, site, Some(&a), &["email"])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        d
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    let two = second.await.unwrap();
    assert!(
        matches!(one, Decision::Recorded(ref ids) if ids.len() == 1),
        "{one:?}"
    );
    assert_eq!(two, Decision::AlreadyAlerted, "the claim key is taken");
    assert_eq!(store.list_alerts(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_settings_the_scan_refuses_fails_at_once_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (url, store) = fresh_store().await;
    let settings = ScanSettings {
        submit_forms: Some("evil.example".into()),
        ..Default::default()
    };
    store
        .add_site("https://r.fleet.test/", "0 3 * * *", &settings)
        .await
        .unwrap();
    queue_all(&store).await;
    let mut w = worker(&url, &[]);
    wait_for("the job failed", Duration::from_secs(30), || async {
        count(&store, JobState::Failed).await == 1
    })
    .await;
    let job = &store.list_jobs(None, 10).await.unwrap()[0];
    assert_eq!(job.attempts, 1, "no retries: {job:?}");
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("--submit-forms evil.example")),
        "{job:?}"
    );
    assert_eq!(w.stop().await, Some(0), "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_keeps_failing_is_retried_then_failed_and_its_site_alerted_as_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (url, store) = fresh_store().await;
    store
        .add_site(
            "https://down.fleet.test/",
            "0 3 * * *",
            &ScanSettings::default(),
        )
        .await
        .unwrap();
    queue_all(&store).await;
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alerts.toml");
    std::fs::write(
        &cfg,
        format!("alert_after_failures = 1\n{}", sink.email_toml()),
    )
    .unwrap();
    // A "browser" that exits at once: every attempt fails to start it.
    let mut w = worker(
        &url,
        &["--browser", "/bin/false", "--config", cfg.to_str().unwrap()],
    );
    wait_for("the job failed", Duration::from_secs(60), || async {
        count(&store, JobState::Failed).await == 1
    })
    .await;
    let job = &store.list_jobs(None, 10).await.unwrap()[0];
    assert_eq!(job.attempts, 3, "{job:?}");
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("/bin/false")),
        "{job:?}"
    );
    assert_eq!(w.lines("runs again later"), 2, "{}", w.log());
    wait_for("the site-down email", Duration::from_secs(30), || async {
        !sink.messages().is_empty()
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    let subject = alert_support::parse(&sink.messages()[0].data)
        .header("subject")
        .unwrap_or_default()
        .to_string();
    assert!(subject.contains("down.fleet.test"), "{subject}");
    assert_eq!(w.stop().await, Some(0), "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_a_running_job_back_without_using_an_attempt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut m = mid_scan(Duration::from_secs(4), "30").await;
    assert_eq!(m.worker.stop().await, Some(0), "{}", m.worker.log());
    let job = &m.store.list_jobs(None, 10).await.unwrap()[0];
    assert_eq!((job.state.as_str(), job.attempts), ("queued", 0), "{job:?}");
    assert!(m.store.list_scans(None, 10).await.unwrap().is_empty());
    // Another worker takes it at once (no lease to wait for) and its first attempt completes.
    let mut b = worker(&m.url, &["--config", &m.cfg]);
    wait_for("the job done", Duration::from_secs(60), || async {
        count(&m.store, JobState::Done).await == 1
    })
    .await;
    assert_eq!(m.store.list_jobs(None, 10).await.unwrap()[0].attempts, 1);
    assert_eq!(b.stop().await, Some(0), "{}", b.log());
}
