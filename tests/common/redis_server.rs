//! Redis for the integration tests: a private `redis-server` (Debian's `redis-server` package)
//! on a free port in a temp dir, without persistence, stopped on drop. A test can kill it and
//! start it again on the same port (an outage).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One `redis-server` for one test.
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    password: Option<String>,
    /// TLS only (`rediss://localhost`), with the test PKI in `dir` (`ca.crt`, `leaf.*`).
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> Self {
        let mut server = RedisServer {
            dir: tempfile::tempdir().expect("tempdir"),
            port: super::free_port(),
            password: password.map(str::to_owned),
            tls: false,
            child: None,
        };
        server.resume();
        server
    }

    /// Starts a server that speaks TLS only, with a certificate for `localhost` from a test CA
    /// ([`RedisServer::ca_path`]).
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        super::pki::make_pki(dir.path(), "", "Redis");
        let mut server = RedisServer {
            dir,
            port: super::free_port(),
            password: None,
            tls: true,
            child: None,
        };
        server.resume();
        server
    }

    /// The test CA's certificate of a TLS server.
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `redis://[:password@]127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://localhost:{}/0", self.port);
        }
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kills the server at once (SIGKILL): an outage. Its data is gone (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, and waits until it answers PING.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        if self.tls {
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                "leaf.crt",
                "--tls-key-file",
                "leaf.key",
                "--tls-ca-cert-file",
                "ca.crt",
                "--tls-auth-clients",
                "no",
            ]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ])
        .current_dir(self.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): apt-get install redis-server; these tests never skip")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 15 s; log:\n{}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command in Redis' inline protocol; the raw reply (for checks on what is stored).
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut text = String::new();
        if let Some(p) = &self.password {
            text.push_str(&format!("AUTH {p}\r\n"));
        }
        text.push_str(line);
        text.push_str("\r\nQUIT\r\n");
        s.write_all(text.as_bytes()).expect("write to redis");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn answers(&self) -> bool {
        if self.tls {
            // redis-cli (redis-tools, installed with redis-server) speaks TLS.
            let port = self.port.to_string();
            return Command::new("redis-cli")
                .args([
                    "-h",
                    "localhost",
                    "-p",
                    &port,
                    "--tls",
                    "--cacert",
                    "ca.crt",
                    "PING",
                ])
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
        }
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && self.command("PING").contains("+PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
