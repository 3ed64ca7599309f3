//! The per-request audit line.
//!
//! One line per proxied request is the busiest log output Tollgate has, so with the JSON log
//! format (the default) it is written by hand instead of through tracing-subscriber's JSON
//! formatter: that one ran every field through a `Visit` trait object and `serde_json`, and
//! formatted a timestamp from scratch, ~22 000 instructions per request (callgrind) — more
//! than the whole auth path. Here the line is built in a per-thread buffer (the timestamp's
//! date and time are formatted once a second per thread) and appended to the same buffered
//! writer as every other log line ([`crate::logging`]), so lines never interleave.
//!
//! The line has the keys and order tracing-subscriber's flattened JSON gives an event, so
//! whoever reads the log sees no difference:
//! `{"timestamp":"2026-12-02T01:30:00.123456Z","level":"INFO","token_id":"…","token_name":"…",
//! "method":"GET","path":"/p2/acme/x.json","status":200,"outcome":"ok","client":"10.0.0.1",
//! "duration_ms":0.481,"target":"audit"}`.
//!
//! The `audit` target and the `info` level are still checked against the configured filter
//! (`log.level: "info,audit=off"` turns the lines off). With the text format, or where
//! [`install`] was never called (the library in tests), the line goes through `tracing`.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::LogWriter;

/// The writer JSON audit lines go to, set once by [`super::init`].
static SINK: OnceLock<LogWriter> = OnceLock::new();

/// Sends JSON audit lines to `writer` from now on (the first call wins).
pub(crate) fn install(writer: LogWriter) {
    let _ = SINK.set(writer);
}

/// What one audit line says about a request. Never holds a secret: the token is named by its
/// public id and name.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The token's id (empty when no token verified).
    pub token_id: &'a str,
    /// The token's name (empty when no token verified).
    pub token_name: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The path as checked and forwarded (normalized).
    pub path: &'a str,
    /// 0 when no response was written (the client went away).
    pub status: u16,
    /// `ok` or the refusal's code (`token_invalid`, `forbidden`, …).
    pub outcome: &'a str,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Time from the request head to the end of the response.
    pub duration: Duration,
    /// The token's previous secret (a regeneration's overlap) was presented: the line gets
    /// `"secret":"previous"`, so the log says when the old secret was last used.
    pub previous_secret: bool,
}

struct Local {
    buf: Vec<u8>,
    /// The second `date` holds, and `YYYY-MM-DDTHH:MM:SS` for it.
    second: u64,
    date: [u8; 19],
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { buf: Vec::new(), second: u64::MAX, date: [0; 19] })
    };
}

/// Writes the audit line of one request, if the log filter lets `audit` at `info` through.
pub fn write(r: &Record<'_>) {
    if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        return write_through_tracing(r);
    };
    LOCAL.with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        let local = &mut *local;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != local.second {
            local.second = now.as_secs();
            local.date = format_second(now.as_secs());
        }
        local.buf.clear();
        format_json(&mut local.buf, &local.date, now.subsec_micros(), r);
        sink.append(&local.buf, false);
    });
}

fn write_through_tracing(r: &Record<'_>) {
    tracing::info!(
        target: "audit",
        token_id = r.token_id,
        token_name = r.token_name,
        method = r.method,
        path = r.path,
        status = r.status,
        outcome = r.outcome,
        client = r.client.map(tracing::field::display),
        secret = r.previous_secret.then_some("previous"),
        duration_ms = r.duration.as_secs_f64() * 1000.0,
    );
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time in UTC.
fn format_second(secs: u64) -> [u8; 19] {
    let mut out = [b'0'; 19];
    let dt = chrono::DateTime::from_timestamp(secs.min(i64::MAX as u64) as i64, 0)
        .unwrap_or_default()
        .naive_utc();
    let mut w = &mut out[..];
    // 19 bytes exactly for years 0–9999.
    let _ = write!(w, "{}", dt.format("%Y-%m-%dT%H:%M:%S"));
    out
}

fn format_json(buf: &mut Vec<u8>, date: &[u8; 19], micros: u32, r: &Record<'_>) {
    let mut num = itoa::Buffer::new();
    buf.extend_from_slice(b"{\"timestamp\":\"");
    buf.extend_from_slice(date);
    buf.push(b'.');
    push_padded(buf, micros, 6);
    buf.extend_from_slice(b"Z\",\"level\":\"INFO\",\"token_id\":");
    push_json_str(buf, r.token_id);
    buf.extend_from_slice(b",\"token_name\":");
    push_json_str(buf, r.token_name);
    buf.extend_from_slice(b",\"method\":");
    push_json_str(buf, r.method);
    buf.extend_from_slice(b",\"path\":");
    push_json_str(buf, r.path);
    buf.extend_from_slice(b",\"status\":");
    buf.extend_from_slice(num.format(r.status).as_bytes());
    buf.extend_from_slice(b",\"outcome\":");
    push_json_str(buf, r.outcome);
    if let Some(ip) = r.client {
        buf.extend_from_slice(b",\"client\":\"");
        let mut ip_buf = [0u8; 48];
        buf.extend_from_slice(crate::net::format_ip(ip, &mut ip_buf));
        buf.push(b'"');
    }
    if r.previous_secret {
        buf.extend_from_slice(b",\"secret\":\"previous\"");
    }
    // Milliseconds with microsecond precision.
    let micros = r.duration.as_micros().min(u64::MAX as u128) as u64;
    buf.extend_from_slice(b",\"duration_ms\":");
    buf.extend_from_slice(num.format(micros / 1000).as_bytes());
    buf.push(b'.');
    push_padded(buf, (micros % 1000) as u32, 3);
    buf.extend_from_slice(b",\"target\":\"audit\"}\n");
}

/// `n` in exactly `width` decimal digits (`n` < 10^width).
fn push_padded(buf: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = buf.len();
    buf.resize(start + width, b'0');
    for slot in buf[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A JSON string literal: `"`, `\` and control characters escaped; other UTF-8 as it is.
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    // Ids, names, methods and paths rarely need escaping: one pass that LLVM vectorizes.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            buf.extend_from_slice(escape);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record<'a>(name: &'a str, path: &'a str, client: Option<IpAddr>) -> Record<'a> {
        Record {
            token_id: "abcdefghijkl",
            token_name: name,
            method: "GET",
            path,
            status: 200,
            outcome: "ok",
            client,
            duration: Duration::from_micros(1_234_567),
            previous_secret: false,
        }
    }

    fn line(r: &Record<'_>, secs: u64, micros: u32) -> String {
        let mut buf = Vec::new();
        format_json(&mut buf, &format_second(secs), micros, r);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn line_is_the_json_tracing_would_write() {
        let ip = "10.20.30.40".parse().unwrap();
        let text = line(
            &record("ci", "/p2/acme/x.json", Some(ip)),
            1_764_639_000,
            42,
        );
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "token_id",
                "token_name",
                "method",
                "path",
                "status",
                "outcome",
                "client",
                "duration_ms",
                "target"
            ]
        );
        assert_eq!(v["timestamp"], "2025-12-02T01:30:00.000042Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "audit");
        assert_eq!(v["token_name"], "ci");
        assert_eq!(v["path"], "/p2/acme/x.json");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client"], "10.20.30.40");
        assert_eq!(v["duration_ms"].as_f64(), Some(1234.567));
        assert!(v.get("secret").is_none(), "the current secret: no key");
        let previous = Record {
            previous_secret: true,
            ..record("ci", "/", Some(ip))
        };
        let v: Value = serde_json::from_str(&line(&previous, 1_764_639_000, 42)).unwrap();
        assert_eq!(v["secret"], "previous");
    }

    #[test]
    fn timestamps_match_chrono() {
        for secs in [0u64, 951_782_400, 1_764_639_000, 4_102_444_799] {
            let want = chrono::DateTime::from_timestamp(secs as i64, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            assert_eq!(&format_second(secs)[..], want.as_bytes(), "{secs}");
        }
        let text = line(&record("n", "/", None), 0, 999_999);
        assert!(text.starts_with("{\"timestamp\":\"1970-01-01T00:00:00.999999Z\""));
        assert!(
            !text.contains("client"),
            "no client address, no key: {text}"
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let nasty = [
            "plain",
            "",
            "quote \" and backslash \\",
            "new\nline\rcr\ttab",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "ünïcødé ✓ 🦀",
            "\"}\n{\"level\":\"ERROR\"",
        ];
        for s in nasty {
            let mut buf = Vec::new();
            push_json_str(&mut buf, s);
            let back: String = serde_json::from_slice(&buf).unwrap();
            assert_eq!(back, s);
            assert_eq!(buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // A name cannot break out of its line or its field.
        let text = line(&record("\"}\n{\"level\":\"ERROR\"", "/a\"b", None), 0, 0);
        assert_eq!(text.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["path"], "/a\"b");
    }

    #[test]
    fn durations_keep_microseconds() {
        for (micros, want) in [
            (0u64, 0.0),
            (7, 0.007),
            (1_000, 1.0),
            (61_000_123, 61000.123),
        ] {
            let mut r = record("n", "/", None);
            r.duration = Duration::from_micros(micros);
            let v: Value = serde_json::from_str(&line(&r, 0, 0)).unwrap();
            assert_eq!(v["duration_ms"].as_f64(), Some(want), "{micros} µs");
        }
    }
}
