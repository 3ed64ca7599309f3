//! Differential path suite: hostile request paths through Tollgate against real stores.
//!
//! A token limited to `/p2/acme/*` must never read (or, with a write token, write) anything
//! outside `/p2/acme/` of the store behind Tollgate, whatever the store makes of the path.
//! Servlet containers strip `;parameters` from each segment before resolving dot segments
//! (`/p2/acme/..;/evil/x` is `/p2/evil/x` to Tomcat), some decode `%u002e`, overlong UTF-8 or
//! encoded slashes: what Tollgate checked must be what the store resolves.
//!
//! For each store (Tomcat 10, Jetty 9, nginx; see `common::stores`) one store and one Tollgate
//! are started. The store's document root holds the in-scope `/p2/acme/widget.json` and canary
//! files outside the route, each holding a unique `CANARY-<store>-<n>` string (one canary is a
//! file *name*, to catch directory listings). A generated corpus of hostile targets aimed from
//! `/p2/acme/` at the canaries is sent with the read token over HTTP/1.1 (the harness's
//! `raw_request`, which sends the target byte for byte) and over HTTP/2 (Tollgate's TLS listener,
//! ALPN `h2`, through pingora's HTTP/2 client: the `:path` is the target verbatim, checked before
//! each request). Then the corpus is sent again as PUT with a write token, each body a unique
//! marker, and the store's directory is checked: no file appeared outside `p2/acme/`, no canary
//! changed, no marker landed anywhere else.
//!
//! The test fails on any canary in any response body (naming store, protocol, target and status),
//! on any write outside the route, and when the in-scope file is not served (so it cannot pass by
//! refusing everything). `cargo test --test paths -- --nocapture` prints the status tally.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::stores::{Store, StoreKind};
use common::*;
use futures_util::StreamExt as _;
use pingora::connectors::http::v2::{handshake, ConnectionRef, H2HandshakeSettings};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Absolute-form targets (HTTP/1.1 only) name the server they are sent to: pingora refuses one
/// whose authority differs from `Host` before Tollgate sees it, which would test nothing.
const AUTHORITY: &str = "HOST:PORT";

/// The token's route; every target starts inside it.
const ROUTE: &str = "/p2/acme/*";
const IN_SCOPE: &str = "/p2/acme/widget.json";
/// Requests in flight at once per protocol (HTTP/1.1: connections; HTTP/2: connections, each
/// carrying its requests one after another).
const H1_PARALLEL: usize = 12;
const H2_LANES: usize = 6;
/// Deadline of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// `..` spelled as servers might decode it: plain, percent-encoded in either case, half-encoded,
/// double-encoded, overlong UTF-8 (2 and 3 bytes), full-width U+FF0E, IIS/Jetty `%u`, and
/// look-alikes (`...`, U+2024, U+FE52) that a Unicode-normalizing server would fold to `.`.
const PARENTS: &[&str] = &[
    "..",
    "%2e%2e",
    "%2E%2E",
    "%2e%2E",
    ".%2e",
    "%2E.",
    "%252e%252e",
    "%252E%252E",
    "%c0%ae%c0%ae",
    "%C0%AE%C0%AE",
    "%e0%80%ae%e0%80%ae",
    "%ef%bc%8e%ef%bc%8e",
    "%EF%BC%8E%EF%BC%8E",
    ".%ef%bc%8e",
    "%u002e%u002e",
    "%U002E%U002E",
    "...",
    "%e2%80%a4%e2%80%a4",
    "%ef%b9%92%ef%b9%92",
];

/// The spellings of `..` crossed with every separator.
const CORE_PARENTS: &[&str] = &["..", "%2e%2e", "%2E%2E", ".%2e"];

/// `;parameters` servlet containers strip from a segment, raw and encoded (and an encoded
/// semicolon servers should keep literal: `%3b`, `%253b`, overlong `%c0%bb`, full-width U+FF1B).
const PARAMS: &[&str] = &[
    "",
    ";",
    ";x=1",
    ";jsessionid=1",
    ";JSESSIONID=0A1B2C",
    "%3b",
    "%3B",
    "%3bx=1",
    "%253b",
    "%c0%bb",
    "%ef%bc%9b",
];

/// What may follow a segment: `/`, doubled, backslash raw and encoded, encoded slash, full-width
/// U+FF0F, double-encoded, and slash-dot-slash forms.
const SEPARATORS: &[&str] = &[
    "/",
    "//",
    "\\",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%ef%bc%8f",
    "%EF%BC%8F",
    "%252f",
    "/./",
    "/.;/",
];

/// `.` spelled the same ways, used in front of a `..` (`/.;/..;/`).
const CURRENTS: &[&str] = &[
    ".",
    "%2e",
    "%2E",
    "%252e",
    "%c0%ae",
    "%e0%80%ae",
    "%ef%bc%8e",
    "%u002e",
];

/// Where one climb from `/p2/acme/` lands (`/p2/`): canaries there, a listing, a new file.
const ONE_UP: &[&str] = &[
    "evil/secret.json",
    "acme-evil/x.json",
    "secret.json",
    "evil/",
    "evil/dropped.json",
];
/// Two climbs: the document root.
const TWO_UP: &[&str] = &[
    "secret.json",
    "WEB-INF/secret.txt",
    "WEB-INF/web.xml",
    "dropped.json",
];
/// Three climbs: beside the document root.
const THREE_UP: &[&str] = &["outside.json", "dropped-outside.json"];

/// One hostile request target.
#[derive(Clone, Debug)]
struct Target {
    target: String,
    /// Which part of the corpus it comes from (for the tally).
    family: &'static str,
    /// Whether it can go as an HTTP/2 `:path` (origin-form, no fragment).
    h2: bool,
}

fn climb(parent: &str, param: &str, sep: &str, times: usize) -> String {
    format!("{parent}{param}{sep}").repeat(times)
}

/// The generated corpus: every target once, in a fixed order.
fn corpus() -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |family: &'static str, target: String| {
        if seen.insert(target.clone()) {
            let h2 = target.starts_with('/') && !target.contains('#');
            out.push(Target { target, family, h2 });
        }
    };
    let mut n = 0usize;
    let mut next = |list: &[&'static str]| {
        n += 1;
        list[n % list.len()]
    };

    // Every spelling of `..` with every parameter, one climb.
    for parent in PARENTS {
        for param in PARAMS {
            let dest = next(ONE_UP);
            add(
                "dotdot×param",
                format!("/p2/acme/{}{dest}", climb(parent, param, "/", 1)),
            );
        }
    }
    // The common spellings with the common parameters and every separator.
    for parent in CORE_PARENTS {
        for param in &PARAMS[..7] {
            for sep in SEPARATORS {
                let dest = next(ONE_UP);
                add(
                    "dotdot×param×sep",
                    format!("/p2/acme/{}{dest}", climb(parent, param, sep, 1)),
                );
            }
        }
    }
    // `.` with a parameter in front of a climb: `/.;/..;/`.
    for current in CURRENTS {
        for param in [";", ";x=1", ";jsessionid=1", "%3b"] {
            for then in ["..;", "%2e%2e;", "..", "%2e%2e%3b"] {
                add(
                    "dot×param",
                    format!("/p2/acme/{current}{param}/{then}/evil/secret.json"),
                );
            }
        }
    }
    // Two and three climbs, to the document root and beyond it.
    for parent in CORE_PARENTS {
        for param in ["", ";", ";x=1", ";jsessionid=1", "%3b", "%3B"] {
            for dest in TWO_UP {
                add(
                    "deep",
                    format!("/p2/acme/{}{dest}", climb(parent, param, "/", 2)),
                );
            }
            for dest in THREE_UP {
                add(
                    "deep",
                    format!("/p2/acme/{}{dest}", climb(parent, param, "/", 3)),
                );
            }
        }
    }
    // Two climbs spelled differently.
    let mixed = [
        "..;",
        "%2e%2e;",
        ".%2e;x=1",
        "..;jsessionid=1",
        "..%3b",
        "%2E%2E%3B",
    ];
    for first in mixed {
        for second in mixed {
            let dest = next(TWO_UP);
            add("mixed", format!("/p2/acme/{first}/{second}/{dest}"));
        }
    }
    // Case, position and odd companions of the parameter; listings; fragments, queries, NUL;
    // the npm scope shape (the one encoded slash Tollgate accepts); absolute-form targets.
    for target in [
        "/p2/acme/..;JSESSIONID=1/evil/secret.json",
        "/p2/acme/%2E%2E%3B/evil/secret.json",
        "/p2/acme/%2e%2e%3B/evil/secret.json",
        "/p2/acme/..;/..;/web-inf/secret.txt",
        "/p2/acme/..;/..;/Web-Inf/secret.txt",
        "/p2/acme/..;/..;/WEB-INF./secret.txt",
        "/p2/acme/..;/..;/WEB-INF;/secret.txt",
        "/p2/acme/..;/..;/WEB-INF;x=1/web.xml",
        "/p2/acme/..;/..;/WEB-INF%2fsecret.txt",
        "/p2/acme/..;/..;/%57EB-INF/secret.txt",
        "/p2/acme/..;/EVIL/secret.json",
        "/p2/acme/..;/evil;/secret.json",
        "/p2/acme/..;/evil/secret.json;",
        "/p2/acme/..;/evil/secret.json;x=1",
        "/p2/acme/;/..;/evil/secret.json",
        "/p2/acme/;..;/evil/secret.json",
        "/p2/acme/..;;/evil/secret.json",
        "/p2/acme/..;a;b/evil/secret.json",
        "/p2/acme/..;/;/evil/secret.json",
        "/p2/acme/..;=/evil/secret.json",
        "/p2/acme/..;%2f/evil/secret.json",
        "/p2/acme/..%3b%2fevil/secret.json",
        "/p2/acme/..;",
        "/p2/acme/..;/",
        "/p2/acme/..;/evil",
        "/p2/acme/..;/evil/",
        "/p2/acme/..;/..;/",
        "/p2/acme/..;/..;/..;/",
        "/p2/acme/widget.json/..;/..;/evil/secret.json",
        "/p2/acme/x/..;/..;/evil/secret.json",
        "/p2/acme/x;/..;/..;/evil/secret.json",
        "/p2/acme/..;%00/evil/secret.json",
        "/p2/acme/..%00/evil/secret.json",
        "/p2/acme/.%00./evil/secret.json",
        "/p2/acme/..%20;/evil/secret.json",
        "/p2/acme/..;%20/evil/secret.json",
        "/p2/acme/%20..;/evil/secret.json",
        "/p2/acme/..%09;/evil/secret.json",
        "/p2/acme/..;/evil/secret.json?x=1",
        "/p2/acme/..;/evil/secret.json?/p2/acme/widget.json",
        "/p2/acme/widget.json?/..;/..;/evil/secret.json",
        "/p2/acme/..;/evil/secret.json#/p2/acme/widget.json",
        "/p2/acme/@..%2F..;/evil/secret.json",
        "/p2/acme/@..%2Fevil/secret.json",
        "/p2/acme/@acme%2F..;/evil/secret.json",
        "/p2/acme/%40..%2F..%3B/evil/secret.json",
        "http://HOST:PORT/p2/acme/..;/evil/secret.json",
        "http://HOST:PORT/p2/acme/%2e%2e;/..;/secret.json",
        "http://HOST:PORT/p2/acme/.;/..;/acme-evil/x.json",
    ] {
        add("extra", target.to_owned());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The store's files
// ---------------------------------------------------------------------------------------------

/// The files of one store: the in-scope file and the canaries (path relative to the document
/// root, `../` = beside it; body).
struct Site {
    widget: String,
    canaries: Vec<String>,
    files: Vec<(String, String)>,
    web_xml_canary: String,
}

fn site(kind: StoreKind) -> Site {
    let s = kind.name();
    let c = |n: u32| format!("CANARY-{s}-{n}");
    let widget = format!("{{\"name\":\"acme/widget\",\"in_scope\":\"WIDGET-{s}\"}}\n");
    let mut files = vec![(IN_SCOPE.trim_start_matches('/').to_owned(), widget.clone())];
    for (n, path) in [
        (1, "p2/evil/secret.json"),
        (2, "secret.json"),
        (3, "p2/acme-evil/x.json"),
        (4, "WEB-INF/secret.txt"),
        (5, "p2/secret.json"),
        (6, "../outside.json"),
    ] {
        files.push((path.to_owned(), format!("{}\n", c(n))));
    }
    // A canary in a file name: only a directory listing of /p2/evil/ can show it.
    files.push((format!("p2/evil/{}.txt", c(7)), "name canary\n".to_owned()));
    let web_xml_canary = c(8);
    let mut canaries: Vec<String> = (1..=8).map(c).collect();
    if kind == StoreKind::Nginx {
        // nginx has no web.xml.
        canaries.pop();
    }
    Site {
        widget,
        canaries,
        files,
        web_xml_canary,
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

type Answer = Result<(u16, Vec<u8>), String>;

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// `GET target` over HTTP/1.1 with the harness's `raw_request` (the target byte for byte); a
/// connection that ends without an answer is an `Err`, not a panic of the whole test.
async fn h1_get(addr: SocketAddr, target: String, auth: String) -> Answer {
    let target = target.replacen(AUTHORITY, &addr.to_string(), 1);
    tokio::spawn(async move {
        let r = raw_request(addr, "GET", &target, &[("Authorization", &auth)]).await;
        (r.status, r.body)
    })
    .await
    .map_err(panic_text)
}

/// `PUT target` with `body` over HTTP/1.1, the target byte for byte (`raw_request` sends no
/// body).
async fn h1_put(addr: SocketAddr, target: &str, auth: &str, body: &[u8]) -> Answer {
    let target = target.replacen(AUTHORITY, &addr.to_string(), 1);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut request = format!(
            "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        // A server that answers and closes early may reset; what arrived still counts.
        let read = stream.read_to_end(&mut response).await;
        parse_h1(&response).map_err(|e| format!("{e} (read: {read:?})"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in time".to_owned()))
}

fn parse_h1(response: &[u8]) -> Answer {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete response head: {:?}",
                String::from_utf8_lossy(response)
            )
        })?;
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let body = &response[end + 4..];
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        common::stores::decode_chunked(body).ok_or("truncated chunked body")?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// An HTTP/2 client over TLS (ALPN `h2`) built from pingora's own connector and `h2` session:
/// `reqwest` (through `url`) would resolve `..`, `%2e` and `\` before sending, pingora's
/// session sends the request's `:path` exactly as the `http::Uri` holds it, and [`H2::send`]
/// checks that this is the target byte for byte.
///
/// The certificate is a throw-away self-signed one, so verification is off: these tests are
/// about paths, `tests/tls.rs` covers certificates.
struct H2 {
    transport: TransportConnector,
    peer: HttpPeer,
    conn: Option<ConnectionRef>,
}

impl H2 {
    fn new(addr: SocketAddr) -> Self {
        pingora::tls::install_default_crypto_provider();
        let mut peer = HttpPeer::new(addr, true, "localhost".to_owned());
        peer.options.alpn = ALPN::H2;
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(REQUEST_TIMEOUT);
        peer.options.write_timeout = Some(REQUEST_TIMEOUT);
        Self {
            transport: TransportConnector::new(None),
            peer,
            conn: None,
        }
    }

    async fn connect(&self) -> Result<ConnectionRef, String> {
        let stream = self
            .transport
            .new_stream(&self.peer)
            .await
            .map_err(|e| format!("TLS connect: {e}"))?;
        if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return Err(format!(
                "the TLS listener chose {:?}, not h2",
                stream.selected_alpn_proto()
            ));
        }
        let mut settings = H2HandshakeSettings::new();
        settings.max_streams = 1;
        handshake(stream, settings)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))
    }

    /// One request on this client's connection (a new one when the last one ended).
    async fn send(&mut self, method: &str, path: &str, auth: &str, body: Option<&[u8]>) -> Answer {
        let mut header = RequestHeader::build(method, path.as_bytes(), None)
            .map_err(|e| format!("h2 request header: {e}"))?;
        let sent = header.uri.path_and_query().map(|pq| pq.as_str());
        if sent != Some(path) {
            return Err(format!("the h2 client would send :path {sent:?}"));
        }
        header
            .insert_header("host", "localhost")
            .and_then(|_| header.insert_header("authorization", auth))
            .map_err(|e| format!("h2 header: {e}"))?;
        if let Some(body) = body {
            header
                .insert_header("content-length", body.len().to_string())
                .map_err(|e| format!("h2 header: {e}"))?;
        }
        let mut session = None;
        for _ in 0..2 {
            let usable = self
                .conn
                .as_ref()
                .is_some_and(|c| !c.is_closed() && !c.is_shutting_down());
            if !usable {
                self.conn = Some(self.connect().await?);
            }
            let conn = self.conn.clone().expect("connected");
            match conn.spawn_stream().await {
                Ok(Some(s)) => {
                    session = Some(s);
                    break;
                }
                // The connection went away (GOAWAY, reset): one more try on a new one.
                Ok(None) | Err(_) => self.conn = None,
            }
        }
        let session = session.ok_or("no HTTP/2 stream could be opened")?;
        let body = body.map(Bytes::copy_from_slice);
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(session, header, body))
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_owned()))
    }
}

async fn exchange(mut s: Http2Session, header: RequestHeader, body: Option<Bytes>) -> Answer {
    let end = body.is_none();
    s.write_request_header(Box::new(header), end)
        .map_err(|e| format!("h2 send: {e}"))?;
    if let Some(body) = body {
        s.write_request_body(body, true)
            .await
            .map_err(|e| format!("h2 send body: {e}"))?;
    }
    s.read_response_header()
        .await
        .map_err(|e| format!("h2 response: {e}"))?;
    let status = s
        .response_header()
        .ok_or("h2: no response header")?
        .status
        .as_u16();
    let mut out = Vec::new();
    while let Some(chunk) = s
        .read_response_body()
        .await
        .map_err(|e| format!("h2 body: {e}"))?
    {
        out.extend_from_slice(&chunk);
    }
    Ok((status, out))
}

// ---------------------------------------------------------------------------------------------
// Running the corpus
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
        }
    }

    /// Short form for file names and markers.
    fn tag(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// One request to send, and (once sent) what came back.
struct Job {
    proto: Proto,
    target: String,
    family: &'static str,
    /// For PUT: the body, holding a marker that names this request.
    body: Option<Vec<u8>>,
}

struct Outcome {
    job: Job,
    method: &'static str,
    answer: Answer,
}

/// GET jobs: every target over HTTP/1.1, and over HTTP/2 where it can be a `:path`.
fn get_jobs(targets: &[Target]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for t in targets.iter().filter(|t| proto == Proto::H1 || t.h2) {
            jobs.push(Job {
                proto,
                target: t.target.clone(),
                family: t.family,
                body: None,
            });
        }
    }
    jobs
}

/// The canary file names of the corpus; a PUT of the "new files" pass renames them.
const DEST_NAMES: &[&str] = &[
    "dropped-outside.json",
    "outside.json",
    "dropped.json",
    "secret.json",
    "secret.txt",
    "web.xml",
    "x.json",
];

/// `target` writing to a file of its own, `put-<proto>-<n>-<name>` instead of the canary or
/// listing it aims at (so a file that lands outside the route names its request).
fn unique_leaf(target: &str, unique: &str) -> String {
    let cut = target.find(['?', '#']).unwrap_or(target.len());
    let (path, rest) = target.split_at(cut);
    for name in DEST_NAMES {
        if let Some(at) = path.rfind(name) {
            return format!(
                "{}{unique}-{name}{}{rest}",
                &path[..at],
                &path[at + name.len()..]
            );
        }
    }
    let slash = if path.ends_with('/') { "" } else { "/" };
    format!("{path}{slash}{unique}.json{rest}")
}

/// PUT jobs, the body of each a marker naming it (recorded in `markers`). `unique`: write to
/// new files named after the request instead of over the canaries.
fn put_jobs(
    targets: &[Target],
    store: &str,
    unique: bool,
    markers: &mut HashMap<String, String>,
) -> Vec<Job> {
    let pass = if unique { "new" } else { "over" };
    let mut jobs = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for (i, t) in targets.iter().enumerate() {
            if proto == Proto::H2 && !t.h2 {
                continue;
            }
            let id = format!("{}-{pass}-{i:04}", proto.tag());
            let target = if unique {
                unique_leaf(&t.target, &format!("put-{id}"))
            } else {
                t.target.clone()
            };
            let marker = format!("PUTMARK-{store}-{id}");
            markers.insert(marker.clone(), format!("{} PUT {target}", proto.name()));
            jobs.push(Job {
                proto,
                target,
                family: t.family,
                body: Some(format!("{{\"put\":\"{marker}\"}}\n").into_bytes()),
            });
        }
    }
    jobs
}

/// Send the jobs: HTTP/1.1 ones `H1_PARALLEL` at a time, each on a connection of its own;
/// HTTP/2 ones on `H2_LANES` connections, one request after another on each; both at once.
async fn run_jobs(
    method: &'static str,
    jobs: Vec<Job>,
    plain: SocketAddr,
    tls: SocketAddr,
    auth: &str,
) -> Vec<Outcome> {
    let (h1_jobs, h2_jobs): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| j.proto == Proto::H1);
    let h1 = futures_util::stream::iter(h1_jobs.into_iter().map(|job| {
        let auth = auth.to_owned();
        async move {
            let answer = match &job.body {
                None => h1_get(plain, job.target.clone(), auth).await,
                Some(body) => h1_put(plain, &job.target, &auth, body).await,
            };
            Outcome {
                job,
                method,
                answer,
            }
        }
    }))
    .buffer_unordered(H1_PARALLEL)
    .collect::<Vec<_>>();

    let mut lanes: Vec<Vec<Job>> = (0..H2_LANES).map(|_| Vec::new()).collect();
    for (i, job) in h2_jobs.into_iter().enumerate() {
        lanes[i % H2_LANES].push(job);
    }
    let lanes = lanes.into_iter().map(|mine| async move {
        let mut client = H2::new(tls);
        let mut out = Vec::with_capacity(mine.len());
        for job in mine {
            let answer = client
                .send(method, &job.target, auth, job.body.as_deref())
                .await;
            out.push(Outcome {
                job,
                method,
                answer,
            });
        }
        out
    });
    let (mut all, h2) = tokio::join!(h1, futures_util::future::join_all(lanes));
    all.extend(h2.into_iter().flatten());
    all
}

/// Every file under `dir` (no symlinks followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Every file of the store's directory and its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|c| (p, c)))
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(160).collect();
    text.replace('\n', "\\n")
}

fn describe(answer: &Answer) -> String {
    match answer {
        Ok((status, body)) => format!("{status} {:?}", excerpt(body)),
        Err(e) => format!("no answer ({e})"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A self-signed certificate for `localhost`/127.0.0.1 in `dir` (`cert.pem`, `key.pem`).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Writes to the store's directory between two snapshots that the route does not allow: a
/// changed or removed file of the document root (outside `p2/acme/`) or canary, a new file in
/// the document root outside `p2/acme/`, a new or changed file anywhere holding a PUT marker.
fn writes_outside(
    store: &Store,
    canaries: &[String],
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    markers: &HashMap<String, String>,
) -> Vec<String> {
    let name = store.kind.name();
    let acme = store.docroot.join("p2/acme");
    let shown = |p: &Path| {
        p.strip_prefix(store.dir())
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let origin = |content: &[u8]| -> String {
        let text = String::from_utf8_lossy(content);
        markers
            .iter()
            .find(|(m, _)| text.contains(m.as_str()))
            .map(|(m, request)| format!("written by {request} ({m})"))
            .unwrap_or_else(|| format!("holds {:?}", excerpt(content)))
    };
    let mut out = Vec::new();
    for (path, old) in before {
        let canary = canaries
            .iter()
            .any(|c| contains(old, c) || path.to_string_lossy().contains(c.as_str()));
        if path.starts_with(&acme) || !(canary || path.starts_with(&store.docroot)) {
            continue;
        }
        match after.get(path) {
            Some(now) if now == old => {}
            Some(now) => out.push(format!(
                "WRITE [{name}] {} changed: {}",
                shown(path),
                origin(now)
            )),
            None => out.push(format!("WRITE [{name}] {} removed", shown(path))),
        }
    }
    for (path, content) in after {
        if path.starts_with(&acme) {
            continue;
        }
        let changed = before.get(path).is_some_and(|old| old != content);
        let new = !before.contains_key(path);
        if (new && path.starts_with(&store.docroot))
            || ((new || changed) && contains(content, "PUTMARK-"))
        {
            // A changed canary was reported above in the same words (deduplicated below).
            let what = if new { "appeared" } else { "changed" };
            out.push(format!(
                "WRITE [{name}] {} {what}: {}",
                shown(path),
                origin(content)
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Start the store, Tollgate in front of it, and send the corpus; fail with every leak.
async fn differential(kind: StoreKind) {
    let started = Instant::now();
    let name = kind.name();
    let site = site(kind);
    let mut builder = Store::builder(kind).web_xml_comment(&site.web_xml_canary);
    for (path, body) in &site.files {
        builder = builder.file(path, body.as_str());
    }
    let store = tokio::task::spawn_blocking(move || builder.start())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let store_ready = started.elapsed();
    let mut failures: Vec<String> = Vec::new();

    // The canaries are really there: the store itself serves them (so a leak would show).
    for path in [
        "/p2/evil/secret.json",
        "/secret.json",
        "/p2/acme-evil/x.json",
    ] {
        let direct = h1_get(store.addr, path.to_owned(), String::new()).await;
        if !matches!(&direct, Ok((200, body)) if site.canaries.iter().any(|c| contains(body, c))) {
            failures.push(format!(
                "[{name}] GET {path} straight from the store: want 200 with a canary, got {}",
                describe(&direct)
            ));
        }
    }
    // Baseline: what the store alone makes of the corpus (information, not a failure).
    let targets = corpus();
    let direct = futures_util::stream::iter(targets.iter().map(|t| {
        let addr = store.addr;
        let target = t.target.clone();
        async move { h1_get(addr, target, String::new()).await }
    }))
    .buffer_unordered(H1_PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let exposed = direct
        .iter()
        .filter(|a| matches!(a, Ok((_, body)) if site.canaries.iter().any(|c| contains(body, c))))
        .count();

    let reader = TestToken::builder("paths-reader")
        .route(ROUTE, "read")
        .rate_limit(json!("unlimited"))
        .build();
    let writer = TestToken::builder("paths-writer")
        .permission("write")
        .route(ROUTE, "write")
        .rate_limit(json!("unlimited"))
        .build();
    let pki = tempfile::tempdir().expect("pki dir");
    let (cert, key) = self_signed(pki.path());
    let tls_addr = free_addr();
    let mut tollgate = Setup::new(&store.url())
        .with_tokens(&[&reader, &writer])
        .set(
            "tls",
            json!({"listen": tls_addr.to_string(), "cert_file": cert, "key_file": key}),
        )
        .start()
        .await;
    let plain = tollgate.setup.listen;
    let (read_auth, write_auth) = (reader.bearer(), writer.bearer());

    // Controls: the in-scope file is served over both protocols (the TLS listener may start
    // a moment after the plain one), through equivalent paths too, and plainly out-of-scope
    // paths are refused: the token is confined, and not to nothing.
    let h2_ready = poll_until(Duration::from_secs(20), || {
        let mut client = H2::new(tls_addr);
        let auth = read_auth.clone();
        async move {
            matches!(
                client.send("GET", IN_SCOPE, &auth, None).await,
                Ok((200, _))
            )
        }
    })
    .await;
    assert!(
        h2_ready.is_some(),
        "[{name}] GET {IN_SCOPE} over h2 never answered 200; tollgate log:\n{}",
        tollgate.logs()
    );
    let mut h2 = H2::new(tls_addr);
    for path in [
        IN_SCOPE,
        "/p2/acme/./widget.json",
        "/p2/acme/x/../widget.json",
    ] {
        for (proto, answer) in [
            (
                Proto::H1,
                h1_get(plain, path.to_owned(), read_auth.clone()).await,
            ),
            (Proto::H2, h2.send("GET", path, &read_auth, None).await),
        ] {
            match answer {
                Ok((200, body)) if body == site.widget.as_bytes() => {}
                other => failures.push(format!(
                    "[{name}] {} GET {path}: want 200 with the in-scope file, got {}",
                    proto.name(),
                    describe(&other)
                )),
            }
        }
    }
    // The absolute form reaches Tollgate's checks too (else its corpus targets test nothing).
    let absolute = format!("http://{AUTHORITY}{IN_SCOPE}");
    match h1_get(plain, absolute.clone(), read_auth.clone()).await {
        Ok((200, body)) if body == site.widget.as_bytes() => {}
        other => failures.push(format!(
            "[{name}] http/1.1 GET {absolute}: want 200 with the in-scope file, got {}",
            describe(&other)
        )),
    }
    for path in [
        "/p2/evil/secret.json",
        "/p2/acme-evil/x.json",
        "/secret.json",
    ] {
        for (proto, answer) in [
            (
                Proto::H1,
                h1_get(plain, path.to_owned(), read_auth.clone()).await,
            ),
            (Proto::H2, h2.send("GET", path, &read_auth, None).await),
        ] {
            if !matches!(answer, Ok((403, _))) {
                failures.push(format!(
                    "[{name}] {} GET {path} (outside the route): want 403, got {}",
                    proto.name(),
                    describe(&answer)
                ));
            }
        }
    }

    // The corpus with the read token, then as PUT with the write token: first over the
    // canaries, then to new files named after each request.
    let get_started = Instant::now();
    let mut outcomes = run_jobs("GET", get_jobs(&targets), plain, tls_addr, &read_auth).await;
    let get_took = get_started.elapsed();
    let put_started = Instant::now();
    let before = snapshot(store.dir());
    let mut markers = HashMap::new();
    for unique in [false, true] {
        let jobs = put_jobs(&targets, name, unique, &mut markers);
        outcomes.extend(run_jobs("PUT", jobs, plain, tls_addr, &write_auth).await);
    }
    let put_took = put_started.elapsed();

    // Control: an in-scope PUT writes its file (so the write check can fail at all).
    if let Some(why) = &store.put_unsupported {
        println!("[{name}] PUT control skipped: {why}");
    } else {
        for proto in [Proto::H1, Proto::H2] {
            let file = format!("put-control-{}.json", proto.tag());
            let path = format!("/p2/acme/{file}");
            let body = format!("PUT-CONTROL-{name}-{}", proto.tag());
            let answer = match proto {
                Proto::H1 => h1_put(plain, &path, &write_auth, body.as_bytes()).await,
                Proto::H2 => {
                    h2.send("PUT", &path, &write_auth, Some(body.as_bytes()))
                        .await
                }
            };
            let written = std::fs::read(store.docroot.join("p2/acme").join(&file)).ok();
            if !matches!(answer, Ok((200..=204, _))) || written.as_deref() != Some(body.as_bytes())
            {
                failures.push(format!(
                    "[{name}] {} PUT {path}: want 2xx and the file written, got {} (file: {:?})",
                    proto.name(),
                    describe(&answer),
                    written.map(|w| excerpt(&w))
                ));
            }
        }
    }
    let after = snapshot(store.dir());
    let writes = writes_outside(&store, &site.canaries, &before, &after, &markers);

    // Canaries in any answer.
    let mut leaks: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut tally: BTreeMap<(Proto, &str, String), usize> = BTreeMap::new();
    let mut family_leaks: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &outcomes {
        let status = match &o.answer {
            Ok((status, body)) => {
                let found: Vec<&String> =
                    site.canaries.iter().filter(|c| contains(body, c)).collect();
                if !found.is_empty() {
                    *family_leaks.entry(o.job.family).or_default() += 1;
                    leaks.push(format!(
                        "LEAK [{name}] {} {} {} -> {status}, body holds {found:?}: {}",
                        o.job.proto.name(),
                        o.method,
                        o.job.target,
                        excerpt(body)
                    ));
                }
                status.to_string()
            }
            Err(e) => {
                errors.push(format!(
                    "NO ANSWER [{name}] {} {} {}: {e}",
                    o.job.proto.name(),
                    o.method,
                    o.job.target
                ));
                "error".to_owned()
            }
        };
        *tally.entry((o.job.proto, o.method, status)).or_default() += 1;
    }
    leaks.sort();
    errors.sort();

    // Tollgate must still be running (a crash would turn the rest into errors).
    if let Some(status) = tollgate.try_exit() {
        failures.push(format!(
            "[{name}] tollgate exited ({status}) during the run"
        ));
    }

    let h2_count = targets.iter().filter(|t| t.h2).count();
    println!(
        "[{name}] {} targets ({h2_count} also over h2), {} requests through tollgate; store \
         ready after {store_ready:?}; GETs took {get_took:?}, PUTs {put_took:?}; whole run {:?}",
        targets.len(),
        outcomes.len(),
        started.elapsed()
    );
    println!(
        "[{name}] straight to the store, {exposed} of {} targets return a canary",
        targets.len()
    );
    for ((proto, method, status), count) in &tally {
        println!(
            "[{name}]   {:8} {method:4} {status:>5}: {count}",
            proto.name()
        );
    }
    println!("[{name}] leaked answers by corpus family: {family_leaks:?}");
    let problems: Vec<&String> = leaks
        .iter()
        .chain(&writes)
        .chain(&errors)
        .chain(&failures)
        .collect();
    assert!(
        problems.is_empty(),
        "[{name}] {} leaked answers, {} writes outside {ROUTE}, {} requests without an answer, \
         {} failed controls:\n{}\n(store log tail:\n{})",
        leaks.len(),
        writes.len(),
        errors.len(),
        failures.len(),
        problems
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&store.logs(), 30)
    );
}

#[test]
fn corpus_is_large_and_covers_every_dimension() {
    let targets = corpus();
    assert!(
        targets.len() >= 300,
        "only {} hostile targets",
        targets.len()
    );
    let unique: HashSet<&str> = targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(unique.len(), targets.len(), "duplicate targets");
    for t in &targets {
        assert!(
            t.target.starts_with("/p2/acme/") || t.target.starts_with("http://HOST:PORT/p2/acme/"),
            "{} does not start inside the route",
            t.target
        );
    }
    for value in PARENTS
        .iter()
        .chain(PARAMS.iter().filter(|p| !p.is_empty()))
        .chain(SEPARATORS)
        .chain(CURRENTS)
    {
        assert!(
            targets.iter().any(|t| t.target.contains(value)),
            "no target uses {value:?}"
        );
    }
    assert!(targets.iter().filter(|t| t.h2).count() >= 300);
}

#[test]
fn put_targets_get_a_file_of_their_own() {
    for (target, want) in [
        (
            "/p2/acme/..;/evil/secret.json",
            "/p2/acme/..;/evil/put-1-secret.json",
        ),
        (
            "/p2/acme/..%2fsecret.json",
            "/p2/acme/..%2fput-1-secret.json",
        ),
        (
            "/p2/acme/..;/evil/secret.json?/p2/acme/widget.json",
            "/p2/acme/..;/evil/put-1-secret.json?/p2/acme/widget.json",
        ),
        ("/p2/acme/..;/evil/", "/p2/acme/..;/evil/put-1.json"),
        ("/p2/acme/..;", "/p2/acme/..;/put-1.json"),
        (
            "/p2/acme/..;/..;/dropped-outside.json",
            "/p2/acme/..;/..;/put-1-dropped-outside.json",
        ),
    ] {
        assert_eq!(unique_leaf(target, "put-1"), want);
    }
    // Every PUT of the "new files" pass has a target of its own.
    let targets = corpus();
    let mut markers = HashMap::new();
    let jobs = put_jobs(&targets, "t", true, &mut markers);
    let distinct: HashSet<&str> = jobs.iter().map(|j| j.target.as_str()).collect();
    assert_eq!(distinct.len(), jobs.len());
    assert_eq!(markers.len(), jobs.len());
}

#[tokio::test]
async fn tomcat_serves_nothing_outside_the_route() {
    differential(StoreKind::Tomcat).await;
}

#[tokio::test]
async fn jetty_serves_nothing_outside_the_route() {
    differential(StoreKind::Jetty).await;
}

#[tokio::test]
async fn nginx_serves_nothing_outside_the_route() {
    differential(StoreKind::Nginx).await;
}
