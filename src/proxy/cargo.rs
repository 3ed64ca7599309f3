//! Cargo sparse registries behind the proxy. cargo sends its token only when the index's
//! `config.json` says `"auth-required": true`; most stores don't, so Tollgate adds it to that
//! one file (JSON-aware, every other field kept in order, Content-Length recomputed). Nothing
//! else is ever buffered.

use bytes::Bytes;

/// Largest `config.json` accepted for rewriting; anything bigger passes through unchanged.
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
}
