//! A flood of 100,000 distinct paths through the real proxy: the ledger holds at most
//! `usage.max_entries` entries, the overflow row counts every other request exactly (in the
//! metric and, after a graceful stop, in the database), and the process's resident memory grows
//! by no more than the bound's entries (`max_entries` × the bytes per entry that
//! `benches/usage.rs` measures) plus a stated slack. Takes about 30 s in a debug build on two
//! busy cores.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{sqlite, token_usage};
use crate::common::*;

/// Distinct paths of the flood.
const N: usize = 100_000;
/// `usage.max_entries`.
const CAP: usize = 5_000;
/// Bytes one ledger entry holds with its path, counted by `benches/usage.rs` (README gives the
/// figure), rounded up, and doubled for what the allocator keeps around a block and the map's
/// table growing by powers of two.
const BYTES_PER_ENTRY: u64 = 2 * 320;
/// What may grow besides the entries: the allocator's pages not returned yet, buffers of
/// connections that a busy moment opens beyond the warm-up's. Without the bound, the flood's
/// 100,000 entries would take N × BYTES_PER_ENTRY / 2 = 32 MB, above the limit.
const SLACK: u64 = 12 << 20;

/// GETs `paths` over `connections` keep-alive connections, one request at a time on each, with a
/// plain HTTP/1.1 client (a debug build of a full client costs more than the proxy it tests);
/// returns the statuses. A connection the proxy closes is opened again.
async fn fetch_all(
    t: &Tollgate,
    auth: &str,
    paths: impl Iterator<Item = String>,
    connections: usize,
) -> Vec<u16> {
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); connections];
    for (i, p) in paths.enumerate() {
        shares[i % connections].push(p);
    }
    let addr = t.setup.listen;
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let auth = auth.to_string();
            tokio::spawn(async move { keep_alive(addr, &auth, share).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.expect("client task"));
    }
    statuses
}

async fn keep_alive(addr: std::net::SocketAddr, auth: &str, paths: Vec<String>) -> Vec<u16> {
    let connect = || async {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    };
    let mut stream = connect().await;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = [0u8; 8192];
    let mut out = Vec::with_capacity(paths.len());
    for path in &paths {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\r\n");
        let mut sent = false;
        let status = 'response: loop {
            if !sent {
                buf.clear();
                stream.write_all(request.as_bytes()).await.expect("write");
                sent = true;
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse().expect("content-length"))
                    .expect("a Content-Length");
                while buf.len() < end + 4 + len {
                    let n = stream.read(&mut tmp).await.expect("read body");
                    assert!(n > 0, "closed within a body");
                    buf.extend_from_slice(&tmp[..n]);
                }
                buf.drain(..end + 4 + len);
                break 'response status;
            }
            let n = stream.read(&mut tmp).await.expect("read");
            if n == 0 {
                // Closed before answering this request: again on a new connection.
                assert!(buf.is_empty(), "closed within a response head");
                stream = connect().await;
                sent = false;
                continue;
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        out.push(status);
    }
    out
}

#[tokio::test]
async fn a_flood_of_distinct_paths_stays_bounded_in_entries_and_memory_and_the_other_row_counts_the_rest(
) {
    const WARM: usize = 3_000;
    const CONCURRENCY: usize = 16;
    let limit = CAP as u64 * BYTES_PER_ENTRY + SLACK;
    assert!(
        limit < N as u64 * BYTES_PER_ENTRY / 2,
        "the limit must be below what an unbounded ledger would take"
    );
    let upstream = Upstream::start();
    // Limited to `/warm`: the flood's paths are refused 403 after the token verified, counted in
    // the ledger like any request of the token, without the upstream's work (which would only
    // make the test slower, not the ledger's memory larger).
    let a = TestToken::builder("flood").route("/warm", "read").build();
    let mut t = Setup::new(&upstream.url())
        .with_tokens(&[&a])
        .with_bootstrap()
        .set("rate_limit", json!("unlimited"))
        .set("log", json!({"format": "json", "level": "warn"}))
        // No flush before the graceful stop: everything is in memory until then.
        .set("usage", json!({"flush_interval": "1h", "max_entries": CAP}))
        .start()
        .await;
    let auth = a.auth();
    // Warm-up: the same connections, buffers and threads the flood uses, on one path (one
    // entry), so that what grows after it is the ledger.
    let warm = fetch_all(
        &t,
        &auth,
        (0..WARM).map(|_| "/warm".to_string()),
        CONCURRENCY,
    )
    .await;
    assert!(warm.iter().all(|s| *s == 200));
    let rss_before = t.rss_kib();

    let started = Instant::now();
    let statuses = fetch_all(
        &t,
        &auth,
        (0..N).map(|i| format!("/flood/{i}")),
        CONCURRENCY,
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 403));
    // The logging phase (where the ledger counts) runs just after the response is sent: the
    // last requests may still be on their way in. `/warm` holds one of the CAP entries.
    let want = (N - (CAP - 1)) as f64;
    poll_until(Duration::from_secs(10), || async {
        t.metric("tollgate_usage_overflow_total").await >= want
    })
    .await;
    assert_eq!(t.metric("tollgate_usage_overflow_total").await, want);
    let took = started.elapsed();
    let rss_after = t.rss_kib();
    let grown = rss_after.saturating_sub(rss_before) * 1024;
    eprintln!(
        "flood of {N} paths in {took:?}: RSS {rss_before} KiB → {rss_after} KiB, grown {} KiB \
         (limit {} KiB = {CAP} × {BYTES_PER_ENTRY} B + {} KiB)",
        grown / 1024,
        limit / 1024,
        SLACK / 1024
    );
    assert!(
        grown < limit,
        "RSS grew by {} KiB, over {} KiB",
        grown / 1024,
        limit / 1024
    );

    // A graceful stop writes the batch: nothing is lost.
    let (status, _) = t.stop_gracefully(Duration::from_secs(30)).await;
    assert!(status.success());
    let db = sqlite(&t).await;
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM usage_daily WHERE token_id = ?")
        .bind(&a.id)
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, CAP + 1, "the bound's rows and one `other`");
    let other: i64 =
        sqlx::query("SELECT requests FROM usage_daily WHERE token_id = ? AND usage_key = 'other'")
            .bind(&a.id)
            .fetch_one(&db)
            .await
            .unwrap()
            .get(0);
    assert_eq!(other as usize, N - (CAP - 1));
    db.close().await;
    t.restart().await;
    let u = token_usage(&t, &a.id).await;
    assert_eq!(
        u["days"][0]["requests"].as_u64(),
        Some((N + WARM) as u64),
        "{u}"
    );
    assert_eq!(u["paths"][0]["key"], "other");
}
