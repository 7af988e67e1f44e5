//! Find and launch Chromium with a fresh profile, and connect to it over CDP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::cdp::{CdpError, Connection};

/// Errors finding or starting the browser.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "no Chromium or Chrome found (looked at {looked}); install it (`apt-get install chromium`), \
         pass --browser PATH, or set CHROME"
    )]
    NotFound { looked: String },
    #[error("browser '{path}' does not exist or is not a file")]
    BadPath { path: String },
    #[error("cannot create the browser profile directory: {0}")]
    Profile(std::io::Error),
    #[error("cannot start browser '{path}': {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("browser '{path}' exited during start-up; its last output: {stderr}")]
    Exited { path: String, stderr: String },
    #[error(
        "browser '{path}' did not open its DevTools endpoint within {secs}s; last output: {stderr}"
    )]
    NoEndpoint {
        path: String,
        secs: u64,
        stderr: String,
    },
    #[error(transparent)]
    Cdp(#[from] CdpError),
}

/// How to start the browser.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Explicit executable; otherwise `CHROME`, then well-known install paths.
    pub executable: Option<PathBuf>,
    /// Extra arguments passed verbatim (e.g. `--host-resolver-rules=...`, `--proxy-server=...`).
    pub extra_args: Vec<String>,
    /// Send the Global Privacy Control signal (`Sec-GPC: 1`, `navigator.globalPrivacyControl`).
    pub global_privacy_control: bool,
}

const CANDIDATES: &[&str] = &[
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/opt/google/chrome/chrome",
    "/snap/bin/chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/// Finds the browser executable: explicit path, then `CHROME`, then well-known paths.
///
/// The Debian `/usr/bin/chromium` wrapper adds flags from /etc/chromium.d, so the real binary
/// under /usr/lib is preferred.
pub fn find_browser(explicit: Option<&Path>) -> Result<PathBuf, LaunchError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(LaunchError::BadPath {
                path: p.display().to_string(),
            })
        };
    }
    if let Some(env) = std::env::var_os("CHROME").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(env);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LaunchError::BadPath {
                path: format!("{} (from CHROME)", p.display()),
            })
        };
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| LaunchError::NotFound {
            looked: CANDIDATES.join(", "),
        })
}

/// A running browser with its own throw-away profile.
pub struct Browser {
    conn: Arc<Connection>,
    child: Child,
    pid: Option<u32>,
    _profile: tempfile::TempDir,
    version: serde_json::Value,
}

/// The size of every tab's window (a common laptop screen's browser window).
pub const WINDOW_SIZE: (u32, u32) = (1366, 900);

/// Features we turn off; a user's own `--disable-features=` is merged in, not given twice.
const DISABLED_FEATURES: &[&str] = &[
    // One renderer for a page and its cross-site iframes, so the frame tree is whole.
    "IsolateOrigins",
    "site-per-process",
    // Third-party cookies must stay visible: they are what the scan is for.
    "TrackingProtection3pcd",
    "Translate",
    "MediaRouter",
    "OptimizationHints",
];

impl Browser {
    /// Launches the browser and connects to it.
    pub async fn launch(opts: &LaunchOptions) -> Result<Browser, LaunchError> {
        let path = find_browser(opts.executable.as_deref())?;
        let profile = tempfile::Builder::new()
            .prefix("pixelwatch-profile-")
            .tempdir()
            .map_err(LaunchError::Profile)?;
        // Chromium blocks third-party cookies in a new profile; a scanner must see them.
        let default_dir = profile.path().join("Default");
        std::fs::create_dir_all(&default_dir).map_err(LaunchError::Profile)?;
        std::fs::write(
            default_dir.join("Preferences"),
            json!({"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": false}})
                .to_string(),
        )
        .map_err(LaunchError::Profile)?;

        let mut disabled: Vec<String> = DISABLED_FEATURES.iter().map(|s| s.to_string()).collect();
        let mut args: Vec<String> = Vec::new();
        for a in &opts.extra_args {
            if let Some(list) = a.strip_prefix("--disable-features=") {
                disabled.extend(list.split(',').map(str::to_string));
            } else {
                args.push(a.clone());
            }
        }
        let mut cmd_args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-extensions".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-site-isolation-trials".into(),
            "--disable-blink-features=AutomationControlled".into(),
            "--mute-audio".into(),
            // Background tabs must run timers at full speed: pixels fire from setTimeout.
            "--disable-background-timer-throttling".into(),
            "--disable-renderer-backgrounding".into(),
            "--disable-backgrounding-occluded-windows".into(),
            "--disable-ipc-flooding-protection".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1),
            // A screen larger than the window, as on a desktop (headless defaults to 800x600).
            "--screen-info={1920x1080}".into(),
            "--remote-debugging-port=0".into(),
            format!("--disable-features={}", disabled.join(",")),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium refuses to run its sandbox as root; as a normal user it stays on.
            cmd_args.push("--no-sandbox".into());
        }
        cmd_args.extend(args);
        cmd_args.push("about:blank".into());

        let mut cmd = Command::new(&path);
        cmd.args(&cmd_args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = spawner::spawn(cmd)
            .await
            .map_err(|source| LaunchError::Spawn {
                path: path.display().to_string(),
                source,
            })?;
        let stderr_tail = Arc::new(Mutex::new(Vec::<String>::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::trace!(target: "pixelwatch::chromium", "{line}");
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.push(line);
                    if t.len() > 12 {
                        t.remove(0);
                    }
                }
            });
        }
        let tail = || {
            stderr_tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .join(" | ")
        };

        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let limit = Duration::from_secs(30);
        let ws_url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(ws_path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), ws_path.trim());
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(LaunchError::Exited {
                    path: path.display().to_string(),
                    stderr: tail(),
                });
            }
            if started.elapsed() > limit {
                return Err(LaunchError::NoEndpoint {
                    path: path.display().to_string(),
                    secs: limit.as_secs(),
                    stderr: tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let conn = Connection::connect(&ws_url).await?;
        let version = conn.call("Browser.getVersion", json!({}), None).await?;
        tracing::debug!(
            browser = %path.display(),
            product = version["product"].as_str().unwrap_or("?"),
            "browser started"
        );
        let pid = child.id();
        Ok(Browser {
            conn,
            child,
            pid,
            _profile: profile,
            version,
        })
    }

    /// The protocol connection.
    pub(super) fn connection(&self) -> Arc<Connection> {
        self.conn.clone()
    }

    /// The browser's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The browser's `Browser.getVersion` answer (product, user agent).
    pub fn version(&self) -> &serde_json::Value {
        &self.version
    }

    /// Ends the browser at once (SIGKILL), so nothing it still holds (a WebSocket frame queued
    /// while offline) is ever sent.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Closes the browser: politely, then by force.
    pub async fn close(mut self) {
        let _ = self
            .conn
            .call_with_timeout("Browser.close", json!({}), None, Duration::from_secs(2))
            .await;
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Browsers die with pixelwatch, even when it is killed with SIGKILL (an OOM kill, a lost
/// fleet worker, a `kill -9` from cron): each is started with Linux's parent-death signal.
/// Linux ties that signal to the *thread* that forked, not the process, and the runtime's
/// threads come and go, so every browser is forked by one thread that lives as long as the
/// process.
mod spawner {
    use std::sync::OnceLock;
    use std::sync::mpsc;

    use tokio::process::{Child, Command};
    use tokio::sync::oneshot;

    struct Job {
        cmd: Command,
        runtime: tokio::runtime::Handle,
        reply: oneshot::Sender<std::io::Result<Child>>,
    }

    static JOBS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

    /// Spawns `cmd` from the spawner thread, registered with the caller's runtime.
    pub(super) async fn spawn(mut cmd: Command) -> std::io::Result<Child> {
        die_with_parent(&mut cmd);
        let jobs = JOBS.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("pixelwatch-browser-spawner".into())
                .spawn(move || {
                    for mut job in rx {
                        let _enter = job.runtime.enter();
                        let _ = job.reply.send(job.cmd.spawn());
                    }
                })
                .expect("a thread for spawning browsers");
            tx
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            cmd,
            runtime: tokio::runtime::Handle::current(),
            reply,
        };
        let gone = || std::io::Error::other("the browser spawner thread is gone");
        jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    #[cfg(target_os = "linux")]
    fn die_with_parent(cmd: &mut Command) {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid), allocating nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // pixelwatch died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn die_with_parent(_cmd: &mut Command) {}
}
