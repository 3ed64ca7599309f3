//! Real package stores for the integration tests: Tomcat 10, Jetty 9 and nginx serving a private
//! document root on a free port of 127.0.0.1, each from a private temp directory, stopped on drop.
//!
//! They come from the Debian packages `tomcat10`, `jetty9` and `nginx` (`.ci/run` installs them).
//! A store that cannot start fails the test with its log; nothing is skipped silently. The one
//! allowed gap is nginx without its DAV module: it then serves GET only and says so in
//! [`Store::put_unsupported`].
//!
//! Every wait is a poll with a deadline: a store is ready when a seeded file reads back whole.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// Where the Debian packages put Tomcat 10 and Jetty 9 (`CATALINA_HOME`, `jetty.home`).
pub const TOMCAT_HOME: &str = "/usr/share/tomcat10";
pub const JETTY_HOME: &str = "/usr/share/jetty9";

/// How long a store may take to answer its first request (a JVM on a busy 2-core CI machine).
const START_DEADLINE: Duration = Duration::from_secs(90);

/// JVM options for both servlet containers: small, quick to start, temp files in the store's
/// own directory.
fn jvm_options(tmp: &Path) -> Vec<String> {
    vec![
        "-XX:+UseSerialGC".into(),
        "-XX:TieredStopAtLevel=1".into(),
        "-Xmx256m".into(),
        format!("-Djava.io.tmpdir={}", tmp.display()),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Apache Tomcat 10: DefaultServlet with `readonly=false` (PUT writes files).
    Tomcat,
    /// Eclipse Jetty 9: a `ROOT` web application (DefaultServlet) with Jetty's `PutFilter`.
    Jetty,
    /// nginx: `root` at the document root, `dav_methods PUT` when the DAV module is built in.
    Nginx,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Tomcat => "tomcat",
            StoreKind::Jetty => "jetty",
            StoreKind::Nginx => "nginx",
        }
    }
}

/// Files and options of a store, before it starts.
pub struct StoreBuilder {
    kind: StoreKind,
    files: Vec<(String, Vec<u8>)>,
    web_xml_comment: String,
}

impl StoreBuilder {
    /// A file to serve: `path` is relative to the document root (`p2/acme/widget.json`); a
    /// leading `../` puts it beside the document root instead, out of the store's reach.
    /// The first file not beginning with `../` is the readiness probe.
    pub fn file(mut self, path: &str, body: impl Into<Vec<u8>>) -> Self {
        self.files.push((path.to_owned(), body.into()));
        self
    }

    /// A comment written into the web application's `WEB-INF/web.xml` (Tomcat and Jetty), e.g.
    /// a canary string that must never be served.
    pub fn web_xml_comment(mut self, comment: &str) -> Self {
        assert!(!comment.contains("--"), "an XML comment cannot hold --");
        self.web_xml_comment = comment.to_owned();
        self
    }

    /// Write the configuration and files, start the store and wait until it serves the probe
    /// file. Panics with the store's log if it exits or is not ready within 90 s.
    pub fn start(self) -> Store {
        let dir = tempfile::Builder::new()
            .prefix(&format!("store-{}-", self.kind.name()))
            .tempdir()
            .expect("store temp dir");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = dir.path().join("store.log");
        let (docroot, command, put_unsupported) = match self.kind {
            StoreKind::Tomcat => tomcat(dir.path(), port, &self.web_xml_comment),
            StoreKind::Jetty => jetty(dir.path(), port, &self.web_xml_comment),
            StoreKind::Nginx => nginx(dir.path(), port),
        };
        let mut probe = None;
        for (path, body) in &self.files {
            let file = match path.strip_prefix("../") {
                Some(beside) => docroot.parent().expect("docroot has a parent").join(beside),
                None => {
                    probe.get_or_insert_with(|| (format!("/{path}"), body.clone()));
                    docroot.join(path)
                }
            };
            std::fs::create_dir_all(file.parent().expect("file has a parent"))
                .expect("create store directory");
            std::fs::write(&file, body).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        }
        let (probe_path, probe_body) = probe.expect("a store needs one file in its document root");
        let child = spawn(command, &log_path);
        let mut store = Store {
            kind: self.kind,
            addr,
            docroot,
            log_path,
            put_unsupported,
            child,
            dir,
        };
        store.wait_ready(&probe_path, &probe_body);
        store
    }
}

fn spawn(mut command: Command, log_path: &Path) -> Child {
    let log = std::fs::File::create(log_path).expect("create store log");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone store log")))
        .stderr(Stdio::from(log))
        // A process group of its own, so drop can stop every process of the store at once.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// A running store; its process group is killed on drop and its directory removed.
pub struct Store {
    pub kind: StoreKind,
    pub addr: SocketAddr,
    /// The directory served at `/`.
    pub docroot: PathBuf,
    log_path: PathBuf,
    /// Why PUT does not write files, when it does not (nginx without its DAV module).
    pub put_unsupported: Option<String>,
    child: Child,
    dir: TempDir,
}

impl Store {
    pub fn builder(kind: StoreKind) -> StoreBuilder {
        StoreBuilder {
            kind,
            files: Vec::new(),
            web_xml_comment: format!("web.xml of the {} test store", kind.name()),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store's private directory (configuration, document root, logs, temp files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the store wrote to stdout, stderr and its error log so far.
    pub fn logs(&self) -> String {
        let mut text = String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default())
            .into_owned();
        let error_log = self.dir.path().join("error.log");
        if let Ok(extra) = std::fs::read(error_log) {
            text.push_str("\n--- error.log ---\n");
            text.push_str(&String::from_utf8_lossy(&extra));
        }
        text
    }

    fn wait_ready(&mut self, probe_path: &str, probe_body: &[u8]) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait store") {
                panic!(
                    "{} exited ({status}) before it was ready; log:\n{}",
                    self.kind.name(),
                    self.logs()
                );
            }
            let last = match blocking_get(self.addr, probe_path) {
                Ok((200, body)) if body == probe_body => return,
                Ok((status, body)) => {
                    format!(
                        "GET {probe_path}: {status} {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )
                }
                Err(e) => format!("GET {probe_path}: {e}"),
            };
            if started.elapsed() > START_DEADLINE {
                panic!(
                    "{} not ready within {START_DEADLINE:?} (last: {last}); log:\n{}",
                    self.kind.name(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0)); it holds only the store.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            #[allow(unsafe_code)] // test-only: stop the store's whole process group
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET` over a fresh connection (HTTP/1.0 semantics: read to EOF), for readiness only.
fn blocking_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete response head")?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = response[end + 4..].to_vec();
    let body = if chunked {
        decode_chunked(&body).ok_or("truncated chunked body")?
    } else {
        body
    };
    Ok((status, body))
}

/// The decoded body of a complete chunked body, else `None`.
pub fn decode_chunked(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = pos + data[pos..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        if data.len() < pos + size {
            return None;
        }
        out.extend_from_slice(&data[pos..pos + size]);
        pos += size + 2;
    }
}

/// `WEB-INF/web.xml` of the web application, holding `comment`.
fn web_xml(comment: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- {comment} -->\n{body}\n",
        comment = comment
    )
}

/// Tomcat: `CATALINA_BASE` in `dir/base` (`conf/server.xml` with one HTTP connector on `port`,
/// `conf/web.xml` with the DefaultServlet writable), the ROOT application in
/// `base/webapps/ROOT`. `catalina.sh run` replaces itself with the JVM.
fn tomcat(dir: &Path, port: u16, comment: &str) -> (PathBuf, Command, Option<String>) {
    let catalina = Path::new(TOMCAT_HOME).join("bin/catalina.sh");
    assert!(
        catalina.exists(),
        "{} is missing: install the Debian package tomcat10 (.ci/run does)",
        catalina.display()
    );
    let base = dir.join("base");
    let docroot = base.join("webapps/ROOT");
    for sub in ["conf", "logs", "temp", "work"] {
        std::fs::create_dir_all(base.join(sub)).expect("create CATALINA_BASE");
    }
    std::fs::create_dir_all(docroot.join("WEB-INF")).expect("create ROOT/WEB-INF");
    std::fs::write(
        base.join("conf/server.xml"),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"#
        ),
    )
    .expect("write server.xml");
    std::fs::write(
        base.join("conf/web.xml"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet>
    <servlet-name>default</servlet-name>
    <servlet-class>org.apache.catalina.servlets.DefaultServlet</servlet-class>
    <init-param><param-name>listings</param-name><param-value>false</param-value></init-param>
    <init-param><param-name>readonly</param-name><param-value>false</param-value></init-param>
    <load-on-startup>1</load-on-startup>
  </servlet>
  <servlet-mapping>
    <servlet-name>default</servlet-name>
    <url-pattern>/</url-pattern>
  </servlet-mapping>
</web-app>
"#,
    )
    .expect("write conf/web.xml");
    std::fs::write(
        docroot.join("WEB-INF/web.xml"),
        web_xml(
            comment,
            r#"<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0" metadata-complete="true"/>"#,
        ),
    )
    .expect("write ROOT/WEB-INF/web.xml");
    let mut cmd = Command::new(&catalina);
    cmd.arg("run")
        .current_dir(dir)
        .env("CATALINA_HOME", TOMCAT_HOME)
        .env("CATALINA_BASE", &base)
        .env("CATALINA_TMPDIR", base.join("temp"))
        .env("JAVA_OPTS", jvm_options(&base.join("temp")).join(" "))
        .env_remove("CATALINA_OPTS")
        .env_remove("CATALINA_PID")
        .env_remove("JAVA_TOOL_OPTIONS");
    (docroot, cmd, None)
}

/// Jetty: `jetty.base` in `dir/base` with the `server`, `http`, `deploy` and `servlets`
/// modules; the ROOT web application in `base/webapps/ROOT` (Jetty's DefaultServlet, which
/// keeps `WEB-INF` private) with `PutFilter` for PUT.
fn jetty(dir: &Path, port: u16, comment: &str) -> (PathBuf, Command, Option<String>) {
    let start_jar = Path::new(JETTY_HOME).join("start.jar");
    assert!(
        start_jar.exists(),
        "{} is missing: install the Debian package jetty9 (.ci/run does)",
        start_jar.display()
    );
    let base = dir.join("base");
    let docroot = base.join("webapps/ROOT");
    let tmp = base.join("tmp");
    std::fs::create_dir_all(docroot.join("WEB-INF")).expect("create ROOT/WEB-INF");
    std::fs::create_dir_all(&tmp).expect("create jetty tmp");
    std::fs::write(
        base.join("start.ini"),
        // No hot deployment: PUTs write under webapps/ while the tests run.
        "--module=server,http,deploy,servlets\njetty.deploy.scanInterval=0\n",
    )
    .expect("write start.ini");
    std::fs::write(
        docroot.join("WEB-INF/web.xml"),
        web_xml(
            comment,
            r#"<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1">
  <filter>
    <filter-name>put</filter-name>
    <filter-class>org.eclipse.jetty.servlets.PutFilter</filter-class>
  </filter>
  <filter-mapping>
    <filter-name>put</filter-name>
    <url-pattern>/*</url-pattern>
  </filter-mapping>
</web-app>"#,
        ),
    )
    .expect("write ROOT/WEB-INF/web.xml");
    let mut cmd = Command::new("java");
    cmd.args(jvm_options(&tmp))
        .arg("-jar")
        .arg(&start_jar)
        .arg(format!("jetty.home={JETTY_HOME}"))
        .arg(format!("jetty.base={}", base.display()))
        .arg(format!("jetty.http.port={port}"))
        .arg("jetty.http.host=127.0.0.1")
        .current_dir(&base)
        .env_remove("JAVA_OPTIONS")
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("JETTY_BASE")
        .env_remove("JETTY_HOME");
    (docroot, cmd, None)
}

/// Whether this nginx has the DAV module (needed for PUT).
fn nginx_has_dav() -> bool {
    let out = Command::new("nginx")
        .arg("-V")
        .output()
        .unwrap_or_else(|e| panic!("cannot run nginx -V: {e} (install the Debian package nginx)"));
    String::from_utf8_lossy(&out.stderr).contains("--with-http_dav_module")
        || String::from_utf8_lossy(&out.stdout).contains("--with-http_dav_module")
}

/// nginx: prefix and configuration in `dir`, one process in the foreground (`daemon off`,
/// `master_process off`, so it never changes user), `root` at `dir/www`.
fn nginx(dir: &Path, port: u16) -> (PathBuf, Command, Option<String>) {
    let docroot = dir.join("www");
    std::fs::create_dir_all(&docroot).expect("create nginx root");
    let dav = nginx_has_dav();
    let location = if dav {
        "dav_methods PUT; create_full_put_path on;"
    } else {
        ""
    };
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body_temp;
  proxy_temp_path {d}/proxy_temp;
  fastcgi_temp_path {d}/fastcgi_temp;
  uwsgi_temp_path {d}/uwsgi_temp;
  scgi_temp_path {d}/scgi_temp;
  server {{
    listen 127.0.0.1:{port};
    root {docroot};
    location / {{ {location} }}
  }}
}}
"#,
            docroot = docroot.display(),
        ),
    )
    .expect("write nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .current_dir(dir);
    let unsupported = (!dav).then(|| "this nginx lacks the DAV module (no PUT)".to_owned());
    (docroot, cmd, unsupported)
}
