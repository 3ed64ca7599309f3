//! The rate-limit fields of a response (`X-RateLimit-*`, `RateLimit`, `RateLimit-Policy`,
//! `Retry-After`), rendered from a limiter [`Decision`].

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;

use crate::ratelimit::Decision;

// Header names are built once (`from_static`: no parsing or allocation per request); on the
// wire they are lowercase, as in HTTP/2 (names are case-insensitive).

/// `X-RateLimit-Limit`: requests allowed per period.
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: requests left right now.
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Used`: `limit - remaining`.
static X_RATELIMIT_USED: HeaderName = HeaderName::from_static("x-ratelimit-used");
/// `X-RateLimit-Reset`: Unix epoch seconds at which the budget is whole again.
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (IETF httpapi draft): `"<name>";q=<requests>;w=<period seconds>`.
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF httpapi draft): `"<name>";r=<remaining>;t=<seconds until whole>`.
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `Retry-After`: seconds until one request is allowed; only on refusals.
static RETRY_AFTER: HeaderName = http::header::RETRY_AFTER;

/// The response header fields of `d`, in a fixed order: `X-RateLimit-Limit`, `-Remaining`,
/// `-Used`, `-Reset`, `RateLimit-Policy`, `RateLimit`, and `Retry-After` only when refused.
/// `unix_now` is the wall clock (time since the Unix epoch).
pub fn render(d: &Decision, unix_now: Duration) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = Vec::with_capacity(7);
    each(d, unix_now, |name, value| h.push((name.clone(), value)));
    h
}

/// Adds the fields of `d` (as [`render`] lists them) to a response on its way to the client,
/// replacing any of the same name the upstream sent.
///
/// On plain parts, like the upstream request (see `headers::prepare`): six `insert_header`s on
/// pingora's case-preserving header cost more than the rest of the rate limiting. Names then go
/// out in canonical case. The fields go straight into the map (no list in between), and only a
/// non-canonical reason phrase needs carrying over (and allocating).
pub fn apply(resp: &mut ResponseHeader, d: &Decision, unix_now: Duration) -> pingora::Result<()> {
    let canonical = resp.status.canonical_reason();
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != canonical)
        .map(str::to_owned);
    let mut parts: http::response::Parts =
        std::mem::replace(resp, ResponseHeader::from(super::headers::empty_response())).into();
    // Room for all of them at once: growing the map per insert costs more.
    parts.headers.reserve(7);
    each(d, unix_now, |name, value| {
        parts.headers.insert(name.clone(), value);
    });
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// Hands each field of `d` to `emit`, in [`render`]'s order.
///
/// Every response of a limited token carries these, so the values are written back to back
/// into one buffer and each is a slice of it: one allocation for all of them
/// (`HeaderValue::from(u64)` and `format!` each allocate); `benches/headers.rs` counts them.
fn each(d: &Decision, unix_now: Duration, mut emit: impl FnMut(&'static HeaderName, HeaderValue)) {
    let name = d.policy_name();
    let mut num = itoa::Buffer::new();
    let mut buf: Vec<u8> = Vec::with_capacity(128);
    let mut ends = [0usize; 7];
    let mut put = |buf: &mut Vec<u8>, i: usize, parts: &[&[u8]]| {
        for p in parts {
            buf.extend_from_slice(p);
        }
        ends[i] = buf.len();
    };
    put(&mut buf, 0, &[num.format(d.limit).as_bytes()]);
    put(&mut buf, 1, &[num.format(d.remaining).as_bytes()]);
    put(&mut buf, 2, &[num.format(d.used).as_bytes()]);
    put(&mut buf, 3, &[num.format(d.reset_at(unix_now)).as_bytes()]);
    let limit = num.format(d.limit).as_bytes();
    put(&mut buf, 4, &[b"\"", name.as_bytes(), b"\";q=", limit]);
    put(
        &mut buf,
        4,
        &[b";w=", num.format(d.window_secs()).as_bytes()],
    );
    put(&mut buf, 5, &[b"\"", name.as_bytes(), b"\";r="]);
    put(&mut buf, 5, &[num.format(d.remaining).as_bytes(), b";t="]);
    put(&mut buf, 5, &[num.format(d.reset_after_secs()).as_bytes()]);
    let retry = d.retry_after_secs();
    if let Some(secs) = retry {
        put(&mut buf, 6, &[num.format(secs).as_bytes()]);
    }
    let buf = bytes::Bytes::from(buf);
    let names = [
        &X_RATELIMIT_LIMIT,
        &X_RATELIMIT_REMAINING,
        &X_RATELIMIT_USED,
        &X_RATELIMIT_RESET,
        &RATELIMIT_POLICY,
        &RATELIMIT,
        &RETRY_AFTER,
    ];
    let count = if retry.is_some() { 7 } else { 6 };
    let mut start = 0;
    for (name, &end) in names.into_iter().zip(&ends).take(count) {
        // Digits, `;`, `=`, quotes and the policy name: always a valid value.
        let value = HeaderValue::from_maybe_shared(buf.slice(start..end))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        emit(name, value);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::*;
    use crate::ratelimit::{Clock, Limit, ManualClock, RateLimiter};

    fn headers(l: &RateLimiter<ManualClock>, d: &Decision) -> Vec<(String, String)> {
        render(d, l.clock().unix_now())
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn expect(pairs: &[(&'static str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    #[test]
    fn headers_after_first_request() {
        let l = limiter();
        let d = l.check(&id("a"), &per_minute(5));
        let reset = (T0 + 13).to_string(); // 1_700_000_012.25 rounded up
        assert_eq!(
            headers(&l, &d),
            expect(&[
                ("X-RateLimit-Limit", "5"),
                ("X-RateLimit-Remaining", "4"),
                ("X-RateLimit-Used", "1"),
                ("X-RateLimit-Reset", &reset),
                ("RateLimit-Policy", "\"default\";q=5;w=60"),
                ("RateLimit", "\"default\";r=4;t=12"),
            ])
        );
    }

    #[test]
    fn headers_mid_budget() {
        let l = limiter();
        let a = id("a");
        l.check(&a, &per_minute(5));
        l.clock().advance(3 * SEC);
        // 1 used, 3 s refilled a quarter of it, then one more: 1.75 owed → 21 s to whole.
        let d = l.check(&a, &per_minute(5));
        let reset = (T0 + 25).to_string(); // 1_700_000_003.25 + 21 rounded up
        assert_eq!(
            headers(&l, &d),
            expect(&[
                ("X-RateLimit-Limit", "5"),
                ("X-RateLimit-Remaining", "3"),
                ("X-RateLimit-Used", "2"),
                ("X-RateLimit-Reset", &reset),
                ("RateLimit-Policy", "\"default\";q=5;w=60"),
                ("RateLimit", "\"default\";r=3;t=21"),
            ])
        );
    }

    #[test]
    fn refused_headers() {
        let l = limiter();
        let a = id("a");
        for _ in 0..5 {
            assert!(l.check(&a, &per_minute(5)).allowed);
        }
        let d = l.check(&a, &per_minute(5));
        assert!(!d.allowed);
        let reset = (T0 + 61).to_string();
        assert_eq!(
            headers(&l, &d),
            expect(&[
                ("X-RateLimit-Limit", "5"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Used", "5"),
                ("X-RateLimit-Reset", &reset),
                ("RateLimit-Policy", "\"default\";q=5;w=60"),
                ("RateLimit", "\"default\";r=0;t=60"),
                ("Retry-After", "12"),
            ])
        );
        // A sub-second wait still says 1.
        l.clock().advance(11_500 * MS);
        let d = l.check(&a, &per_minute(5));
        assert_eq!(headers(&l, &d)[6], ("retry-after".into(), "1".into()));
    }

    #[test]
    fn policy_window_rounds_up() {
        let l = limiter();
        let cases: &[(Duration, &str)] = &[
            (3600 * SEC, "\"default\";q=2;w=3600"),
            (1500 * MS, "\"default\";q=2;w=2"),
            (MS, "\"default\";q=2;w=1"),
        ];
        for &(period, want) in cases {
            let d = l.check(&id("w"), &Limit::new(2, period).unwrap());
            assert_eq!(
                render(&d, l.clock().unix_now())[4],
                (RATELIMIT_POLICY.clone(), HeaderValue::from_static(want))
            );
        }
    }

    #[test]
    fn extreme_values_render() {
        let limits = EXTREME_LIMITS;
        for start in [Duration::ZERO, Duration::MAX] {
            let l = RateLimiter::new(ManualClock::new(start));
            for advance in [Duration::ZERO, Duration::MAX] {
                l.clock().advance(advance);
                for (i, limit) in limits.iter().enumerate() {
                    let key = id(&i.to_string());
                    for _ in 0..3 {
                        let d = l.check(&key, limit);
                        let h = render(&d, l.clock().unix_now());
                        assert_eq!(h.len(), if d.allowed { 6 } else { 7 });
                        assert!(h.iter().all(|(_, v)| !v.is_empty()));
                        let p = l.peek(&key, limit);
                        assert!(render(&p, l.clock().unix_now()).len() >= 6);
                    }
                }
            }
        }
        let l = limiter();
        let d = l.check(&id("max"), &limits[0]);
        let h = render(&d, l.clock().unix_now());
        assert_eq!(h[4].1, format!("\"default\";q={};w={}", u32::MAX, u64::MAX));
        let d = l.check(&id("one"), &limits[1]);
        assert_eq!(
            render(&d, l.clock().unix_now())[3].1,
            u64::MAX.to_string().as_str()
        );
        // requests: 0 behaves as 1, a zero period as 1 ns.
        let d = l.check(&id("zero"), &limits[4]);
        assert_eq!(render(&d, l.clock().unix_now())[4].1, "\"default\";q=1;w=1");
    }
}
