//! Header hygiene for everything sent upstream: what the client sent that must not reach the
//! store (its credentials, Tollgate's own and forwarding headers, method and path overrides,
//! connection upgrades), and what Tollgate says instead (identity, Host, `X-Forwarded-*`,
//! `X-Real-IP`, `Forwarded`). Pure functions of the header and their inputs: no session.
//!
//! Over 500 lines: more than half of it is the unit tests, one or more per rule.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, HOST};
use pingora::http::RequestHeader;

use crate::net::format_ip;
use crate::token::Token;

/// `X-Forwarded-For` (also read for the client's address behind trusted proxies).
pub(super) static X_FORWARDED_FOR: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: http::HeaderName = http::HeaderName::from_static("x-real-ip");
static X_TOLLGATE_TOKEN_ID: http::HeaderName = http::HeaderName::from_static("x-tollgate-token-id");
static X_TOLLGATE_TOKEN_NAME: http::HeaderName =
    http::HeaderName::from_static("x-tollgate-token-name");

/// What the upstream request says about its client, besides the request itself.
pub(super) struct Forwarding<'a> {
    /// The token whose identity headers are set; `None` when they are off (or no token).
    pub identity: Option<&'a Token>,
    /// The `Host` the upstream is sent.
    pub host: &'a HeaderValue,
    /// The client's address, when known: the TCP peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` names (`crate::net::TrustedProxies`). `X-Real-IP` and `Forwarded`
    /// say it.
    pub client: Option<IpAddr>,
    /// The TCP peer, when known: appended to `X-Forwarded-For` (the hop this proxy saw).
    pub peer: Option<IpAddr>,
    /// The client came over TLS.
    pub https: bool,
}

/// [`rewrite`] on pingora's request header.
///
/// This is most of Tollgate's own per-request cost, so it works on the plain
/// `http::request::Parts`: pingora's `RequestHeader` keeps a second map with each header
/// name's original case, and every `insert_header` parses the name again, allocates and
/// updates both maps (~1 300 instructions each). Upstream, header names are then written
/// in canonical case (`Content-Type`, `x-forwarded-for`): HTTP header names are
/// case-insensitive. The request target is the URI, which is what was checked.
pub(super) fn prepare(req: &mut RequestHeader, f: &Forwarding<'_>) {
    let send_end_stream = req.send_end_stream();
    let mut parts: http::request::Parts = std::mem::replace(req, empty_request()).into();
    rewrite(&mut parts, f);
    *req = RequestHeader::from(parts);
    if let Some(v) = send_end_stream {
        req.set_send_end_stream(v);
    }
}

/// The client's credentials and any reserved header it sent (see [`is_reserved_header`]) go;
/// identity, Host and `X-Forwarded-*` are set, the original Host kept as `X-Forwarded-Host`
/// and the TCP peer appended to `X-Forwarded-For` (so the chain the upstream sees ends with the
/// hop Tollgate saw, trusted proxy or not); `X-Real-IP` and `Forwarded` name the client
/// (behind a trusted proxy, the address resolved from the chain; otherwise the peer).
pub(super) fn rewrite(parts: &mut http::request::Parts, f: &Forwarding<'_>) {
    let headers = &mut parts.headers;
    headers.remove(AUTHORIZATION);
    if headers.keys().any(is_reserved_header) {
        let spoofed: Vec<http::HeaderName> = headers
            .keys()
            .filter(|k| is_reserved_header(k))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    headers.reserve(6);
    if let Some(t) = f.identity {
        for (name, value) in [
            (&X_TOLLGATE_TOKEN_ID, &t.id),
            (&X_TOLLGATE_TOKEN_NAME, &t.name),
        ] {
            // Ids and names are validated ASCII: this cannot fail.
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        }
    }
    let original_host = match headers.get(HOST) {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    headers.insert(HOST, f.host.clone());
    if let Some(h) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
    if let Some(peer) = f.peer {
        let xff = forwarded_for(
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes),
            peer,
        );
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    if let Some(ip) = f.client {
        let mut buf = [0u8; 48];
        let addr = format_ip(ip, &mut buf);
        if let Ok(v) = HeaderValue::from_bytes(addr) {
            headers.insert(X_REAL_IP.clone(), v);
        }
        headers.insert(http::header::FORWARDED, forwarded(ip, addr, f.https));
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if f.https { "https" } else { "http" }),
    );
}

/// Tollgate never upgrades a connection: after a `101` the connection would be a tunnel to
/// the store that no later request on it passes the gate. `Upgrade` (and `HTTP2-Settings`,
/// `Connection`, which name it) are removed, so the store answers the plain request (clients
/// such as `curl --http2` on `http://` then simply stay on HTTP/1.1). A `Content-Length` that
/// pingora accepted as several equal values (`5, 5`) is forwarded as the one number, never
/// verbatim: a store might read the list differently. Two lookups when neither applies.
pub(super) fn fix_framing(req: &mut RequestHeader) {
    let headers = &req.headers;
    if headers.contains_key(http::header::UPGRADE) || headers.contains_key("http2-settings") {
        req.remove_header(&http::header::UPGRADE);
        req.remove_header("http2-settings");
        req.remove_header(&http::header::CONNECTION);
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let plain = match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes().iter().all(u8::is_ascii_digit),
        (Some(_), Some(_)) => false,
    };
    if plain {
        return;
    }
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = length {
        // pingora refuses unequal or unparsable lists before this runs.
        let _ = req.insert_header(http::header::CONTENT_LENGTH, n);
    }
}

/// Placeholders while a header is edited as plain parts (they allocate nothing).
pub(super) fn empty_request() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

pub(super) fn empty_response() -> http::response::Parts {
    http::Response::new(()).into_parts().0
}

/// Client headers that never reach the upstream: Tollgate's own `X-Tollgate-*`, the
/// forwarding headers it sets itself (`X-Forwarded-For` is appended to, not dropped), method
/// overrides (a read token must not turn a GET into a DELETE at a store that honours them),
/// path overrides (`X-Original-URL`, `X-Forwarded-Uri`…: some frameworks route by them, past
/// the path Tollgate checked), and the identity, client-address and scheme headers that
/// authenticating proxies and CDNs set (`X-Remote-User`, `X-Forwarded-User`, `True-Client-IP`,
/// `X-Forwarded-Protocol`…): a store behind Tollgate may trust one of them. Names are compared
/// with `_` and `.` read as `-`: WSGI and CGI stores map them to `_`, so `X_Tollgate_Token_Name`
/// would arrive as the identity header.
fn is_reserved_header(name: &http::HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    // Every reserved name starts with `x`, `f`, `r`, `t` or `c` (names are lower case) and has
    // at least 9 bytes: most headers stop here.
    if !matches!(n.first(), Some(b'x' | b'f' | b'r' | b't' | b'c')) || n.len() < 9 {
        return false;
    }
    let fold = |b: u8| if b == b'_' || b == b'.' { b'-' } else { b };
    let mut buf = [0u8; 40];
    let Some(dst) = buf.get_mut(..n.len()) else {
        return n.len() > 11 && n[..11].iter().map(|&b| fold(b)).eq(*b"x-tollgate-");
    };
    for (d, &b) in dst.iter_mut().zip(n) {
        *d = fold(b);
    }
    let folded: &[u8] = dst;
    folded.starts_with(b"x-tollgate-")
        || matches!(
            folded,
            // Forwarding: Tollgate sets these itself.
            b"x-forwarded-host"
                | b"x-forwarded-proto"
                | b"x-forwarded-port"
                | b"x-forwarded-prefix"
                | b"x-forwarded-server"
                | b"x-forwarded-ssl"
                | b"x-forwarded-scheme"
                | b"forwarded"
                | b"x-real-ip"
                // Scheme, as other proxies and frameworks spell it.
                | b"x-forwarded-protocol"
                | b"x-forwarded-https"
                | b"x-url-scheme"
                | b"front-end-https"
                // The client's address, as CDNs and load balancers spell it.
                | b"x-client-ip"
                | b"true-client-ip"
                | b"cf-connecting-ip"
                | b"fastly-client-ip"
                | b"x-cluster-client-ip"
                | b"x-original-forwarded-for"
                // Identity, as authenticating proxies (oauth2-proxy, Apache, nginx) pass it.
                | b"x-remote-user"
                | b"remote-user"
                | b"x-remote-group"
                | b"x-webauth-user"
                | b"x-forwarded-user"
                | b"x-forwarded-email"
                | b"x-forwarded-groups"
                | b"x-forwarded-preferred-username"
                | b"x-auth-request-user"
                | b"x-auth-request-email"
                | b"x-auth-request-groups"
                | b"x-auth-request-preferred-username"
                // Method and path overrides.
                | b"x-http-method-override"
                | b"x-http-method"
                | b"x-method-override"
                | b"x-original-url"
                | b"x-rewrite-url"
                | b"x-original-uri"
                | b"x-original-path"
                | b"x-forwarded-uri"
                | b"x-forwarded-path"
                | b"x-envoy-original-path"
        )
        // Other spellings of `X-Forwarded-For` (the plain one is appended to).
        || (folded == b"x-forwarded-for" && n != b"x-forwarded-for")
}

/// `Forwarded` (RFC 7239) as Tollgate sees the request: the client's address (IPv6 quoted and
/// bracketed) and the protocol. Replaces whatever the client sent.
fn forwarded(ip: IpAddr, addr: &[u8], https: bool) -> HeaderValue {
    let mut v = Vec::with_capacity(addr.len() + 24);
    v.extend_from_slice(b"for=");
    if ip.is_ipv6() {
        v.extend_from_slice(b"\"[");
        v.extend_from_slice(addr);
        v.extend_from_slice(b"]\"");
    } else {
        v.extend_from_slice(addr);
    }
    v.extend_from_slice(if https {
        b";proto=https"
    } else {
        b";proto=http"
    });
    HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `X-Forwarded-For`: the client's address appended to what the client sent (every line of
/// it, in order, joined with `, `: a proxy may add its own line after the client's), formatted
/// into a stack buffer (no `String` on the hot path).
fn forwarded_for<'a>(previous: impl Iterator<Item = &'a [u8]>, ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 48];
    let addr = format_ip(ip, &mut buf);
    let mut v: Vec<u8> = Vec::new();
    for prev in previous.filter(|p| !p.is_empty()) {
        if !v.is_empty() {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(prev);
    }
    let value = if v.is_empty() {
        HeaderValue::from_bytes(addr)
    } else {
        v.extend_from_slice(b", ");
        v.extend_from_slice(addr);
        HeaderValue::from_maybe_shared(Bytes::from(v))
    };
    // Both parts were valid header bytes (the previous values came in as such).
    value.unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::for_tests("AAAAAAAAAAAA", "ci-reader")
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("a valid request").into_parts().0
    }

    fn forwarding<'a>(
        identity: Option<&'a Token>,
        host: &'a HeaderValue,
        client: Option<&str>,
        https: bool,
    ) -> Forwarding<'a> {
        Forwarding {
            identity,
            host,
            client: client.map(|c| c.parse().expect("an address")),
            peer: client.map(|c| c.parse().expect("an address")),
            https,
        }
    }

    #[test]
    fn behind_a_trusted_proxy_the_chain_ends_with_the_peer_and_names_the_client() {
        let host = HeaderValue::from_static("store");
        let mut parts = request("/p", &[("x-forwarded-for", "192.0.2.1")]);
        let mut f = forwarding(None, &host, Some("192.0.2.1"), false);
        f.peer = Some("10.0.0.3".parse().expect("an address"));
        rewrite(&mut parts, &f);
        assert_eq!(all(&parts, "x-forwarded-for"), ["192.0.2.1, 10.0.0.3"]);
        assert_eq!(all(&parts, "x-real-ip"), ["192.0.2.1"]);
        assert_eq!(all(&parts, "forwarded"), ["for=192.0.2.1;proto=http"]);
    }

    fn all(parts: &http::request::Parts, name: &str) -> Vec<String> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .collect()
    }

    fn one(parts: &http::request::Parts, name: &str) -> Option<String> {
        let mut values = all(parts, name);
        assert!(values.len() <= 1, "{name}: {values:?}");
        values.pop()
    }

    #[test]
    fn credentials_are_removed() {
        let host = HeaderValue::from_static("store.internal");
        let mut parts = request(
            "/p2/a.json",
            &[
                ("authorization", "Basic dG9rZW46c2VjcmV0"),
                ("authorization", "Bearer tok_x"),
                ("accept", "application/json"),
            ],
        );
        rewrite(&mut parts, &forwarding(None, &host, None, false));
        assert!(parts.headers.get(AUTHORIZATION).is_none());
        assert_eq!(one(&parts, "accept").as_deref(), Some("application/json"));
    }

    #[test]
    fn reserved_and_spoofed_headers_are_removed() {
        let removed = [
            "x-tollgate-token-id",
            "x-tollgate-token-name",
            "x-tollgate-anything",
            "x_tollgate_token_name",
            "X_Tollgate_Token_Id",
            "x-tollgate-a-name-well-past-thirty-two-bytes",
            "x_tollgate_a_name_well_past_thirty_two_bytes",
            "x-forwarded-port",
            "x_forwarded_port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x_forwarded_for",
            "x_forwarded_host",
            "x_forwarded_proto",
            "x_real_ip",
            "x-http-method-override",
            "x_http_method_override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x_original_url",
            "x-rewrite-url",
            "x.tollgate.token.id",
            "x-remote-user",
            "remote-user",
            "x-forwarded-user",
            "x-auth-request-user",
            "x-auth-request-preferred-username",
            "x-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "x-cluster-client-ip",
            "x-forwarded-protocol",
            "x-url-scheme",
            "front-end-https",
            "x-forwarded-uri",
            "x-original-path",
            "x-envoy-original-path",
            "x-forwarded-path",
        ];
        // Set by Tollgate itself: the client's value is replaced, never kept beside it.
        let replaced = [
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
        ];
        let kept = [
            ("x-forwarded", "kept"),
            ("x-custom", "kept"),
            ("forwarded-by", "kept"),
            ("x-tollgate", "kept"),
            ("remote-addr-x", "kept"),
            ("content-type", "kept"),
            ("cache-control", "kept"),
            ("true-client", "kept"),
        ];
        let mut sent: Vec<(&str, &str)> = removed.iter().map(|n| (*n, "spoofed")).collect();
        sent.extend(replaced);
        sent.extend(kept);
        for name in removed {
            let n = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            assert!(is_reserved_header(&n), "{name}");
        }
        for (name, _) in replaced {
            let n = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            assert!(is_reserved_header(&n), "{name}");
        }
        for (name, _) in kept.iter().chain(&[("x-forwarded-for", "")]) {
            let n = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            assert!(!is_reserved_header(&n), "{name}");
        }

        let host = HeaderValue::from_static("store.internal");
        let mut parts = request("/p2/a.json", &sent);
        rewrite(
            &mut parts,
            &forwarding(None, &host, Some("10.0.0.7"), false),
        );
        for name in removed {
            assert!(
                parts.headers.get(name).is_none(),
                "{name} reached the upstream"
            );
        }
        assert_eq!(one(&parts, "x-forwarded-host"), None, "no Host was sent");
        assert_eq!(one(&parts, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            one(&parts, "forwarded").as_deref(),
            Some("for=10.0.0.7;proto=http")
        );
        assert_eq!(one(&parts, "x-real-ip").as_deref(), Some("10.0.0.7"));
        for (name, value) in kept {
            assert_eq!(one(&parts, name).as_deref(), Some(value), "{name}");
        }
        // The underscore spelling of X-Forwarded-For is dropped, not appended to.
        assert_eq!(one(&parts, "x-forwarded-for").as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn identity_headers_only_when_enabled() {
        let t = token();
        let host = HeaderValue::from_static("store.internal");
        let spoofed = [
            ("x-tollgate-token-id", "BBBBBBBBBBBB"),
            ("x-tollgate-token-name", "admin"),
        ];
        let mut on = request("/a", &spoofed);
        rewrite(&mut on, &forwarding(Some(&t), &host, None, false));
        assert_eq!(
            one(&on, "x-tollgate-token-id").as_deref(),
            Some("AAAAAAAAAAAA")
        );
        assert_eq!(
            one(&on, "x-tollgate-token-name").as_deref(),
            Some("ci-reader")
        );
        let mut off = request("/a", &spoofed);
        rewrite(&mut off, &forwarding(None, &host, None, false));
        assert_eq!(one(&off, "x-tollgate-token-id"), None);
        assert_eq!(one(&off, "x-tollgate-token-name"), None);
    }

    #[test]
    fn host_is_replaced_and_the_original_forwarded() {
        let host = HeaderValue::from_static("store.internal:8080");
        let mut parts = request("/a", &[("host", "proxy.example")]);
        rewrite(&mut parts, &forwarding(None, &host, None, true));
        assert_eq!(one(&parts, "host").as_deref(), Some("store.internal:8080"));
        assert_eq!(
            one(&parts, "x-forwarded-host").as_deref(),
            Some("proxy.example")
        );
        assert_eq!(one(&parts, "x-forwarded-proto").as_deref(), Some("https"));
        // An absolute target without a Host header: the authority is the original host.
        let mut parts = request("http://proxy.example:81/a", &[]);
        rewrite(&mut parts, &forwarding(None, &host, None, false));
        assert_eq!(one(&parts, "host").as_deref(), Some("store.internal:8080"));
        assert_eq!(
            one(&parts, "x-forwarded-host").as_deref(),
            Some("proxy.example:81")
        );
    }

    #[test]
    fn client_address_is_appended_and_stated() {
        let host = HeaderValue::from_static("store.internal");
        let mut parts = request("/a", &[("x-forwarded-for", "192.0.2.1, 192.0.2.2")]);
        rewrite(
            &mut parts,
            &forwarding(None, &host, Some("10.0.0.7"), false),
        );
        assert_eq!(
            all(&parts, "x-forwarded-for"),
            ["192.0.2.1, 192.0.2.2, 10.0.0.7"]
        );
        assert_eq!(one(&parts, "x-real-ip").as_deref(), Some("10.0.0.7"));
        assert_eq!(
            one(&parts, "forwarded").as_deref(),
            Some("for=10.0.0.7;proto=http")
        );

        let mut parts = request("/a", &[]);
        rewrite(
            &mut parts,
            &forwarding(None, &host, Some("2001:db8::1"), true),
        );
        assert_eq!(
            one(&parts, "x-forwarded-for").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(one(&parts, "x-real-ip").as_deref(), Some("2001:db8::1"));
        assert_eq!(
            one(&parts, "forwarded").as_deref(),
            Some("for=\"[2001:db8::1]\";proto=https")
        );

        // No known address: nothing claims one.
        let mut parts = request("/a", &[]);
        rewrite(&mut parts, &forwarding(None, &host, None, false));
        assert_eq!(one(&parts, "x-forwarded-for"), None);
        assert_eq!(one(&parts, "x-real-ip"), None);
        assert_eq!(one(&parts, "forwarded"), None);

        let ip = "10.0.0.1".parse().expect("an address");
        let xff = |lines: &[&'static [u8]]| forwarded_for(lines.iter().copied(), ip);
        assert_eq!(xff(&[]), "10.0.0.1");
        assert_eq!(xff(&[b""]), "10.0.0.1");
        assert_eq!(xff(&[b"1.2.3.4"]), "1.2.3.4, 10.0.0.1");
        assert_eq!(
            xff(&[b"1.2.3.4", b"", b"5.6.7.8"]),
            "1.2.3.4, 5.6.7.8, 10.0.0.1"
        );
    }

    #[test]
    fn prepare_keeps_the_request_and_its_end_of_stream() {
        let host = HeaderValue::from_static("store.internal");
        let mut req = RequestHeader::build("PUT", b"/upload/a.zip?x=1", None).expect("a request");
        req.append_header("Authorization", "Bearer tok_x")
            .expect("a header");
        req.append_header("Content-Type", "application/zip")
            .expect("a header");
        // Only an HTTP/2 request has the flag.
        req.set_version(http::Version::HTTP_2);
        req.set_send_end_stream(false);
        prepare(&mut req, &forwarding(None, &host, Some("10.0.0.7"), false));
        assert_eq!(req.method, http::Method::PUT);
        assert_eq!(req.uri, "/upload/a.zip?x=1");
        assert_eq!(req.send_end_stream(), Some(false));
        assert!(req.headers.get(AUTHORIZATION).is_none());
        assert_eq!(req.headers["content-type"], "application/zip");
        assert_eq!(req.headers["host"], "store.internal");
        assert_eq!(req.headers["x-forwarded-for"], "10.0.0.7");
    }

    #[test]
    fn upgrades_are_removed() {
        for (name, value) in [
            ("upgrade", "websocket"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ] {
            let mut req = RequestHeader::build("GET", b"/a", None).expect("a request");
            req.append_header(name, value).expect("a header");
            req.append_header("Connection", "Upgrade, HTTP2-Settings")
                .expect("a header");
            req.append_header("Accept", "*/*").expect("a header");
            fix_framing(&mut req);
            for gone in ["upgrade", "http2-settings", "connection"] {
                assert!(req.headers.get(gone).is_none(), "{gone} after {name}");
            }
            assert_eq!(req.headers["accept"], "*/*");
        }
        // A plain keep-alive request keeps its Connection header.
        let mut req = RequestHeader::build("GET", b"/a", None).expect("a request");
        req.append_header("Connection", "keep-alive")
            .expect("a header");
        fix_framing(&mut req);
        assert_eq!(req.headers["connection"], "keep-alive");
    }

    #[test]
    fn repeated_content_length_is_normalised() {
        let cases: &[(&[&str], &str)] = &[
            (&["5, 5"], "5"),
            (&["5,5"], "5"),
            (&["5", "5"], "5"),
            (&["5"], "5"),
            (&["0"], "0"),
        ];
        for &(sent, want) in cases {
            let mut req = RequestHeader::build("PUT", b"/a", None).expect("a request");
            for v in sent {
                req.append_header("Content-Length", *v).expect("a header");
            }
            fix_framing(&mut req);
            let values: Vec<_> = req.headers.get_all("content-length").iter().collect();
            assert_eq!(values, [want], "{sent:?}");
        }
        let mut req = RequestHeader::build("GET", b"/a", None).expect("a request");
        fix_framing(&mut req);
        assert!(req.headers.get("content-length").is_none());
    }
}
