//! A throwaway PostgreSQL server for tests, started by the test harness: `initdb` in a temporary
//! directory and `postgres` on a free loopback port, run as the `postgres` user when the tests run
//! as root (PostgreSQL refuses root), as the current user otherwise. Each test gets a database of
//! its own (`fresh_db`). The server dies with the test process (parent-death signal), and data
//! directories that earlier runs left behind are removed.
//!
//! Binaries: `$PIXELWATCH_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package, installed by `scripts/setup.sh`).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PIXELWATCH_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("postgres").exists());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect(
        "PostgreSQL is not installed: run scripts/setup.sh --test (Debian package `postgresql`) \
         or set PIXELWATCH_PG_BIN",
    )
}

/// The user the server runs as: `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no `postgres` user (install the postgresql package)"
    );
    // SAFETY: checked non-null above.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const PREFIX: &str = "pixelwatch-pg-";

/// Removes data directories of earlier runs whose server is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let pid = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Every `postgres` process is spawned by this one thread, which lives as long as the test
/// process: the parent-death signal fires when the spawning *thread* exits.
/// A command to spawn, and where to send the child.
type SpawnRequest = (Command, mpsc::Sender<Child>);

fn spawn_postgres(cmd: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, back) in rx {
                let child = cmd.spawn().expect("postgres starts");
                let _ = back.send(child);
            }
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    });
    let (back_tx, back_rx) = mpsc::channel();
    tx.lock().unwrap().send((cmd, back_tx)).unwrap();
    back_rx.recv().unwrap()
}

/// One PostgreSQL server.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    child: Mutex<Option<Child>>,
    next_db: AtomicUsize,
    /// Extra `-c name=value` settings.
    settings: Vec<String>,
}

impl PgServer {
    /// The server shared by every test of this binary.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start_new)
    }

    /// A server of its own (for a test that stops and restarts it).
    pub fn start_new() -> PgServer {
        PgServer::start_configured(|_| Vec::new())
    }

    /// A server that accepts TCP connections over TLS only, with a certificate for 127.0.0.1
    /// issued by a CA of its own; returns it and the CA certificate (PEM) to trust.
    pub fn start_tls() -> (PgServer, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let server = PgServer::start_configured(|dir| {
            let data = dir.join("data");
            std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
            std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
            // TLS or nothing over TCP: a connection that works proves TLS.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            for f in ["server.crt", "server.key", "pg_hba.conf"] {
                let p = data.join(f);
                if let Some((uid, gid)) = server_user() {
                    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
                }
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            vec!["ssl=on".into()]
        });
        (server, ca_pem)
    }

    /// A server of its own; `configure` prepares its new data directory and returns extra
    /// settings.
    fn start_configured(configure: impl FnOnce(&Path) -> Vec<String>) -> PgServer {
        remove_stale();
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .unwrap()
            .keep();
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let out = as_server_user(&mut Command::new(bin.join("initdb")))
            .args(["-D", dir.join("data").to_str().unwrap()])
            .args(["-A", "trust", "-U", "pixelwatch", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let settings = configure(&dir);
        let server = PgServer {
            dir,
            port: free_port(),
            bin,
            child: Mutex::new(None),
            next_db: AtomicUsize::new(0),
            settings,
        };
        server.start();
        server
    }

    /// Starts (again) on the same data directory and port, and waits until it accepts
    /// connections.
    pub fn start(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let mut cmd = Command::new(self.bin.join("postgres"));
        as_server_user(&mut cmd)
            .args(["-D", self.dir.join("data").to_str().unwrap()])
            .args([
                "-p",
                &self.port.to_string(),
                "-k",
                self.dir.to_str().unwrap(),
            ])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=300", "-c", "full_page_writes=off"])
            .args(self.settings.iter().flat_map(|c| ["-c", c.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; runs in the child before exec, after its uid change.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        *self.child.lock().unwrap() = Some(spawn_postgres(cmd));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start; log:\n{}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once, as a crash would (`SIGQUIT`: immediate shutdown).
    pub fn stop_immediate(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            // SAFETY: signalling the server this harness started, by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let _ = c.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://pixelwatch@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database for one test; returns its URL.
    pub async fn fresh_db(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t_{}_{n}", std::process::id());
        connect(&self.url("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.url(&name)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain client of `url` (its connection runs on a task of its own).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test server accepts connections");
    tokio::spawn(conn);
    client
}
