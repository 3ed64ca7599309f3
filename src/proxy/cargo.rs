//! Cargo sparse registries behind the proxy. cargo sends its token only when the index's
//! `config.json` says `"auth-required": true`; most stores don't, so Tollgate adds it to that
//! one file (JSON-aware, every other field kept in order). Nothing else is ever buffered.
//!
//! `config.json` is proxied like any file, with three filters: the upstream request asks for
//! the whole file in identity encoding (no `Accept-Encoding`, conditional or range headers);
//! a `200` without `Content-Encoding` loses its `Content-Length` (the rewritten length is not
//! known when the head goes out, so the body is chunked, or ends with the connection); and
//! the body is collected, then sent rewritten at its end.

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

/// Largest `config.json` accepted for rewriting. A bigger one fails as an upstream error: a
/// `502` when its `Content-Length` says so; without one, once the body has grown past this:
/// a `502` too if the response head is not written yet, else the connection is closed.
pub const MAX_CONFIG_JSON: usize = 64 * 1024;

/// `config.json` with `"auth-required": true`, or `None` when the body is not a JSON object
/// (then it is passed through unchanged).
pub fn add_auth_required(body: &[u8]) -> Option<Bytes> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?
        .insert("auth-required".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The client-side path of `config.json` under the index path `/index/`.
pub fn config_json_path(index: &str) -> String {
    format!("{}/config.json", index.trim_end_matches('/'))
}

/// Asks the upstream for the whole `config.json` as it is: identity encoding, and no
/// conditional or range request (whose `304` or `206` answer could not be rewritten).
pub fn prepare_request(req: &mut RequestHeader) {
    for name in [&ACCEPT_ENCODING, &IF_NONE_MATCH, &IF_MODIFIED_SINCE, &RANGE] {
        req.remove_header(name);
    }
}

/// Where a request is in the `config.json` rewrite (one per request, in the proxy's context).
#[derive(Debug, Default)]
pub enum ConfigJson {
    /// Not a `config.json` request, or its response passes through as the upstream sent it.
    #[default]
    No,
    /// A `config.json` request whose response head has not arrived yet.
    Requested,
    /// A `200` identity body being collected, to be sent rewritten at its end.
    Collecting(Vec<u8>),
}

impl ConfigJson {
    /// A `config.json` request still waiting for its response head.
    pub fn is_requested(&self) -> bool {
        matches!(self, ConfigJson::Requested)
    }

    /// Takes the upstream's response head. A `200` without `Content-Encoding` and with a body
    /// of at most [`MAX_CONFIG_JSON`] bytes is rewritten: its `Content-Length` goes, and for a
    /// GET its body is collected. A bigger one (by its `Content-Length`) fails as an upstream
    /// error before anything is sent; a HEAD of one passes through. An informational head
    /// (`1xx`) passes through and the next one is taken in turn. Anything else (another
    /// status, an encoded or empty body) passes through unchanged.
    pub fn on_response(&mut self, resp: &mut ResponseHeader, head_only: bool) -> Result<()> {
        // An informational answer (`100`, `103 Early Hints`) comes before the real one, which
        // is still to be rewritten.
        if resp.status.is_informational() {
            return Ok(());
        }
        *self = ConfigJson::No;
        if resp.status != http::StatusCode::OK || resp.headers.contains_key(CONTENT_ENCODING) {
            return Ok(());
        }
        let length = resp
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let capacity = match length {
            Some(0) => return Ok(()),
            Some(n) if n > MAX_CONFIG_JSON as u64 => {
                return if head_only { Ok(()) } else { too_large() };
            }
            Some(n) => n as usize,
            None => 1024,
        };
        resp.remove_header(&CONTENT_LENGTH);
        if !head_only {
            *self = ConfigJson::Collecting(Vec::with_capacity(capacity));
        }
        Ok(())
    }

    /// Takes one piece of the response body: while collecting, nothing goes out until the
    /// end, where the whole body goes out rewritten (or unchanged when it is not a JSON
    /// object). Past [`MAX_CONFIG_JSON`] bytes it fails as an upstream error.
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        let ConfigJson::Collecting(collected) = self else {
            return Ok(());
        };
        if let Some(piece) = body.take() {
            if collected.len() + piece.len() > MAX_CONFIG_JSON {
                *self = ConfigJson::No;
                return too_large();
            }
            collected.extend_from_slice(&piece);
        }
        if end {
            let raw = std::mem::take(collected);
            *body = Some(add_auth_required(&raw).unwrap_or_else(|| Bytes::from(raw)));
            *self = ConfigJson::No;
        }
        Ok(())
    }
}

/// The upstream's `config.json` is too large to rewrite: an upstream failure.
fn too_large() -> Result<()> {
    Error::e_explain(ErrorType::InvalidHTTPHeader, "config.json too large").map_err(|e| e.into_up())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_flag_and_keeps_fields_in_order() {
        let out = add_auth_required(
            br#"{"dl":"https://x/api/v1/crates","api":"https://x","auth-required":false}"#,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            br#"{"dl":"https://x/api/v1/crates","api":"https://x","auth-required":true}"#
        );
        let out = add_auth_required(b"{\n  \"dl\": \"d\"\n}\n").unwrap();
        assert_eq!(&out[..], br#"{"dl":"d","auth-required":true}"#);
        assert!(add_auth_required(b"[1]").is_none());
        assert!(add_auth_required(b"not json").is_none());
        assert_eq!(config_json_path("/index/"), "/index/config.json");
        assert_eq!(config_json_path("/"), "/config.json");
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).expect("a response");
        for (k, v) in headers {
            resp.append_header(k.to_string(), *v).expect("a header");
        }
        resp
    }

    /// Runs `pieces` through the filter as pingora would; returns what goes downstream.
    fn body_out(state: &mut ConfigJson, pieces: &[&[u8]]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(piece));
            state.on_body(&mut body, i + 1 == pieces.len())?;
            out.extend_from_slice(body.as_deref().unwrap_or_default());
        }
        Ok(out)
    }

    #[test]
    fn request_asks_for_the_whole_identity_file() {
        let mut req = RequestHeader::build("GET", b"/index/config.json", None).expect("a request");
        for (k, v) in [
            ("Accept-Encoding", "gzip, br"),
            ("If-None-Match", "\"abc\""),
            ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("Range", "bytes=0-10"),
            ("Accept", "application/json"),
        ] {
            req.append_header(k, v).expect("a header");
        }
        prepare_request(&mut req);
        let names: Vec<_> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn a_plain_200_is_rewritten_in_pieces() {
        for length in [Some("27"), None] {
            let mut state = ConfigJson::Requested;
            let mut headers = vec![("Content-Type", "application/json")];
            headers.extend(length.map(|l| ("Content-Length", l)));
            let mut resp = response(200, &headers);
            state.on_response(&mut resp, false).expect("accepted");
            assert!(resp.headers.get(CONTENT_LENGTH).is_none(), "{length:?}");
            assert_eq!(resp.headers["content-type"], "application/json");
            let out = body_out(&mut state, &[b"{\"dl\":\"https:", b"//x/crates\"}", b""])
                .expect("rewritten");
            assert_eq!(out, br#"{"dl":"https://x/crates","auth-required":true}"#);
            assert!(matches!(state, ConfigJson::No));
        }
        // The end may come as a last piece with data, or as none.
        let mut state = ConfigJson::Collecting(Vec::new());
        let mut body = Some(Bytes::from_static(b"{}"));
        state.on_body(&mut body, false).expect("collected");
        assert_eq!(body, None);
        let mut body = None;
        state.on_body(&mut body, true).expect("rewritten");
        assert_eq!(body.as_deref(), Some(&br#"{"auth-required":true}"#[..]));
    }

    #[test]
    fn anything_else_passes_through() {
        let cases: &[(u16, &[(&str, &str)])] = &[
            (404, &[("Content-Length", "9")]),
            (304, &[]),
            (206, &[("Content-Length", "5")]),
            (
                200,
                &[("Content-Encoding", "gzip"), ("Content-Length", "20")],
            ),
            (200, &[("Content-Length", "0")]),
        ];
        for &(status, headers) in cases {
            let mut state = ConfigJson::Requested;
            let mut resp = response(status, headers);
            state.on_response(&mut resp, false).expect("passed");
            assert!(matches!(state, ConfigJson::No), "{status} {headers:?}");
            assert_eq!(resp.headers.len(), headers.len(), "{status} {headers:?}");
            let out = body_out(&mut state, &[b"not json", b"!"]).expect("passed");
            assert_eq!(out, b"not json!");
        }
        // A body that is not a JSON object goes out as it came.
        let mut state = ConfigJson::Requested;
        state
            .on_response(&mut response(200, &[]), false)
            .expect("accepted");
        assert_eq!(body_out(&mut state, &[b"[1,", b"2]"]).unwrap(), b"[1,2]");
    }

    #[test]
    fn an_informational_answer_waits_for_the_real_one() {
        let mut state = ConfigJson::Requested;
        let mut early = response(103, &[("Link", "</x>; rel=preload")]);
        state.on_response(&mut early, false).expect("passed");
        assert!(state.is_requested());
        assert_eq!(early.headers.len(), 1);
        let mut resp = response(200, &[("Content-Length", "2")]);
        state.on_response(&mut resp, false).expect("accepted");
        assert!(resp.headers.get(CONTENT_LENGTH).is_none());
        let out = body_out(&mut state, &[b"{}"]).expect("rewritten");
        assert_eq!(out, br#"{"auth-required":true}"#);
    }

    #[test]
    fn head_loses_only_the_length() {
        let mut state = ConfigJson::Requested;
        let mut resp = response(200, &[("Content-Length", "27")]);
        state.on_response(&mut resp, true).expect("accepted");
        assert!(resp.headers.get(CONTENT_LENGTH).is_none());
        assert!(matches!(state, ConfigJson::No));
        let big = (MAX_CONFIG_JSON + 1).to_string();
        let mut resp = response(200, &[("Content-Length", &big)]);
        ConfigJson::Requested
            .on_response(&mut resp, true)
            .expect("a HEAD reads no body");
        assert_eq!(resp.headers["content-length"], big.as_str());
    }

    #[test]
    fn too_large_fails_as_an_upstream_error() {
        let big = (MAX_CONFIG_JSON + 1).to_string();
        let mut resp = response(200, &[("Content-Length", &big)]);
        let e = ConfigJson::Requested
            .on_response(&mut resp, false)
            .expect_err("too large");
        assert_eq!(e.esource(), &ErrorSource::Upstream);
        let at_limit = MAX_CONFIG_JSON.to_string();
        let mut resp = response(200, &[("Content-Length", &at_limit)]);
        ConfigJson::Requested
            .on_response(&mut resp, false)
            .expect("at the limit");

        // Without a length: past the limit while collecting.
        let mut state = ConfigJson::Requested;
        state
            .on_response(&mut response(200, &[]), false)
            .expect("accepted");
        let piece = vec![b' '; MAX_CONFIG_JSON / 2];
        let mut body = Some(Bytes::from(piece.clone()));
        state.on_body(&mut body, false).expect("half");
        let mut body = Some(Bytes::from(piece));
        state.on_body(&mut body, false).expect("exactly the limit");
        let mut body = Some(Bytes::from_static(b"{}"));
        let e = state.on_body(&mut body, true).expect_err("too large");
        assert_eq!(e.esource(), &ErrorSource::Upstream);
    }
}
