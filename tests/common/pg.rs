//! PostgreSQL for the integration tests: a private cluster (initdb into a temp dir from
//! `/usr/lib/postgresql/15/bin`, one free port, stopped on drop), or the server of
//! `TOLLGATE_TEST_DATABASE_URL` when that is set. Either way every test gets a fresh database.
//!
//! CI runs these tests; they never skip. A missing PostgreSQL installation is a loud failure
//! naming what is missing.
//!
//! When the tests run as root (CI does), `initdb` refuses to run, so the temp dir is handed to
//! the `postgres` user and `initdb` / `postgres` run through `runuser -u postgres --`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the PostgreSQL 15 server binaries live (Debian/Ubuntu `postgresql-15`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// A server to use instead of a private cluster (`postgres://user:pw@host:port/db`); the tests
/// create (and drop) their own databases on it, so the user needs `CREATEDB`.
pub const DATABASE_URL_ENV: &str = "TOLLGATE_TEST_DATABASE_URL";
/// The superuser of a private cluster (`initdb -U`).
pub const PG_USER: &str = "tollgate";

/// One PostgreSQL server for one test.
pub struct PgCluster {
    kind: Kind,
    created: Vec<String>,
}

enum Kind {
    /// `TOLLGATE_TEST_DATABASE_URL`: not ours to stop.
    External { url: String },
    /// initdb'd and started by us.
    Private(Private),
}

struct Private {
    /// Holds `data/`, the Unix socket and `postgres.log`; removed on drop (after the server).
    dir: TempDir,
    port: u16,
    /// `runuser` (as root) or `postgres` itself; `None` while stopped.
    child: Option<Child>,
    as_root: bool,
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn pg_tool(name: &str) -> PathBuf {
    let path = Path::new(PG_BIN).join(name);
    assert!(
        path.exists(),
        "{} is missing: these tests need PostgreSQL 15 (apt-get install postgresql-15) or \
         {DATABASE_URL_ENV}=postgres://… pointing at a server; they never skip",
        path.display()
    );
    path
}

/// `psql` from the server's bin dir, else the client package's.
fn psql_path() -> PathBuf {
    let candidates = [
        Path::new(PG_BIN).join("psql"),
        PathBuf::from("/usr/bin/psql"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("psql not found at {candidates:?}: install postgresql-client (tests never skip)")
        })
}

/// Run a command to completion, panicking with its output unless it succeeds.
fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `url` with its database (path) replaced by `db`; user, password, host, port and query stay.
pub fn url_with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).expect("URL has a scheme");
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..authority_end])
}

impl PgCluster {
    /// The server of `TOLLGATE_TEST_DATABASE_URL` if set, else a private cluster.
    pub fn start() -> Self {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => {
                eprintln!("postgres: using {DATABASE_URL_ENV} (fresh database per test)");
                Self {
                    kind: Kind::External {
                        url: url.trim().to_owned(),
                    },
                    created: Vec::new(),
                }
            }
            _ => Self::private(),
        }
    }

    /// Always a private cluster, whatever the environment says (a test that stops the server
    /// must own it).
    pub fn private() -> Self {
        let initdb = pg_tool("initdb");
        pg_tool("postgres");
        pg_tool("pg_isready");
        let dir = tempfile::tempdir().expect("tempdir for postgres");
        let as_root = running_as_root();
        if as_root {
            // initdb refuses root; the server's files must belong to its user.
            run_ok(
                "chown the cluster dir to postgres",
                Command::new("chown").arg("postgres").arg(dir.path()),
            );
        }
        let data = dir.path().join("data");
        let started = Instant::now();
        let mut cmd = Self::as_server_user(as_root, &initdb);
        cmd.current_dir(dir.path()).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            PG_USER,
            "--no-sync",
        ]);
        run_ok("initdb", &mut cmd);
        let initdb_took = started.elapsed();
        let mut private = Private {
            dir,
            port: super::free_port(),
            child: None,
            as_root,
        };
        let up = private.start_server();
        eprintln!(
            "postgres: private cluster on 127.0.0.1:{} (initdb {} ms, start {} ms)",
            private.port,
            initdb_took.as_millis(),
            up.as_millis()
        );
        Self {
            kind: Kind::Private(private),
            created: Vec::new(),
        }
    }

    fn as_server_user(as_root: bool, program: &Path) -> Command {
        if as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// True for a private cluster (one that [`PgCluster::stop`] can stop).
    pub fn is_private(&self) -> bool {
        matches!(self.kind, Kind::Private(_))
    }

    /// The port of a private cluster.
    pub fn port(&self) -> u16 {
        match &self.kind {
            Kind::Private(p) => p.port,
            Kind::External { .. } => panic!("port(): not a private cluster"),
        }
    }

    /// A fresh, empty database named after `hint`; returns its URL.
    pub fn create_database(&mut self, hint: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let safe: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "tg_{safe}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = match &self.kind {
            Kind::Private(p) => {
                run_ok(
                    "createdb",
                    Command::new(pg_tool("createdb"))
                        .args(["-h", "127.0.0.1", "-p", &p.port.to_string(), "-U", PG_USER])
                        .arg(&name),
                );
                format!("postgres://{PG_USER}@127.0.0.1:{}/{name}", p.port)
            }
            Kind::External { url } => {
                self.psql_url(url, &format!("CREATE DATABASE \"{name}\""));
                url_with_database(url, &name)
            }
        };
        self.created.push(name);
        url
    }

    /// Run `sql` with `psql -Atc` on the database of `url`; returns stdout, trimmed.
    pub fn psql_url(&self, url: &str, sql: &str) -> String {
        let out = run_ok(
            &format!("psql {sql:?}"),
            Command::new(psql_path())
                .arg(url)
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql])
                .env_remove("PGPASSWORD")
                .env_remove("PGSERVICE"),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stop the (private) server: a fast shutdown, which disconnects every client. Returns how
    /// long it took.
    pub fn stop(&mut self) -> Duration {
        let Kind::Private(p) = &mut self.kind else {
            panic!("stop(): {DATABASE_URL_ENV} points at a server these tests do not own");
        };
        p.stop("INT", Duration::from_secs(30))
    }

    /// Start a stopped private server again on the same data directory and port; returns how
    /// long it took to accept connections.
    pub fn start_again(&mut self) -> Duration {
        let Kind::Private(p) = &mut self.kind else {
            panic!("start_again(): not a private cluster");
        };
        p.start_server()
    }

    /// The server log of a private cluster (empty otherwise).
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Private(p) => std::fs::read_to_string(p.log_path()).unwrap_or_default(),
            Kind::External { .. } => String::new(),
        }
    }
}

impl Private {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start `postgres` and wait until `pg_isready` says it accepts connections.
    fn start_server(&mut self) -> Duration {
        assert!(self.child.is_none(), "postgres is already running");
        let started = Instant::now();
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open postgres.log");
        let mut cmd = PgCluster::as_server_user(self.as_root, &pg_tool("postgres"));
        cmd.current_dir(self.dir.path())
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("spawn postgres"));
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait postgres"))
            {
                self.child = None;
                panic!(
                    "postgres exited ({status}) at start on port {}; log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            let ready = Command::new(pg_tool("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", PG_USER, "-d", "postgres"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready on port {} within 30 s; log:\n{}",
                self.port,
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's pid from `postmaster.pid` (the child is `runuser` when we are root).
    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn signal_postmaster(&self, sig: &str) {
        let pid = self
            .postmaster_pid()
            .or_else(|| self.child.as_ref().map(Child::id));
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Signal the postmaster (`INT` fast, `QUIT` immediate) and wait for the child to exit.
    fn stop(&mut self, sig: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        if self.child.is_none() {
            return Duration::ZERO;
        }
        self.signal_postmaster(sig);
        let deadline = started + timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait postgres")
                .is_some();
            if exited {
                self.child = None;
                return started.elapsed();
            }
            if Instant::now() > deadline {
                self.signal_postmaster("KILL");
                let child = self.child.as_mut().expect("child");
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "postgres did not stop within {timeout:?} of SIG{sig}; log:\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Private(p) => {
                if p.child.is_some() {
                    // Immediate shutdown; SIGKILL if even that hangs. Never panic in drop.
                    p.signal_postmaster("QUIT");
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while let Some(child) = p.child.as_mut() {
                        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                            p.child = None;
                            break;
                        }
                        if Instant::now() > deadline {
                            p.signal_postmaster("KILL");
                            let Some(child) = p.child.as_mut() else { break };
                            let _ = child.kill();
                            let _ = child.wait();
                            p.child = None;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            Kind::External { url } => {
                for name in self.created.drain(..) {
                    let _ = Command::new(psql_path())
                        .arg(url.as_str())
                        .args([
                            "-X",
                            "-Atc",
                            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                        ])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}
