//! The lifetime policy (`tokens.max_lifetime`): a token must expire, and no later than the
//! policy's length after it is made. Checked when a token is created or regenerated (API, CLI)
//! and on every token-file entry. Pure: `from` is passed in.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// A lifetime as written in the configuration: whole days as `365d`, else humantime's form.
pub fn lifetime_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs > 0 && secs % 86_400 == 0 && d.subsec_nanos() == 0 {
        format!("{}d", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Refuses an expiry that breaks `tokens.max_lifetime` (`max`; `None`: no limit): never, or
/// later than `max` after `from` (when the token is made). The message names the policy.
pub fn check_lifetime(
    expires_at: Option<DateTime<Utc>>,
    from: DateTime<Utc>,
    max: Option<Duration>,
) -> Result<(), String> {
    let Some(max) = max else {
        return Ok(());
    };
    let text = lifetime_text(max);
    let policy = format!("tokens.max_lifetime is {text}");
    let Some(expires_at) = expires_at else {
        return Err(format!(
            "{policy}: a token that never expires is not allowed; choose an expiry within {text}"
        ));
    };
    let limit = chrono::Duration::from_std(max)
        .ok()
        .and_then(|d| from.checked_add_signed(d));
    match limit {
        Some(limit) if expires_at > limit => Err(format!(
            "{policy}: the expiry {} is later than {}",
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            limit.to_rfc3339_opts(SecondsFormat::Secs, true)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manage::{build_new, regenerate, NewToken};
    use crate::token::{HashParams, Permission};

    #[test]
    fn max_lifetime() {
        let p = HashParams::cheap();
        let now = Utc::now();
        let year = Some(std::time::Duration::from_secs(365 * 86_400));
        let req = |name: &str, expires_in: Option<&str>| NewToken {
            name: name.into(),
            description: None,
            permission: Permission::Read,
            routes: vec![],
            expires_in: expires_in.map(Into::into),
            rate_limit: None,
            allowed_ips: Default::default(),
            packages: Default::default(),
            secret: None,
        };
        let with = |expires: &str| build_new(req("x", Some(expires)), &p, now, year);
        assert!(with("365d").is_ok());
        assert!(with("30d").is_ok());
        for bad in ["366d", "never"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.starts_with("tokens.max_lifetime is 365d: "), "{e}");
        }
        assert!(
            build_new(req("x", None), &p, now, year).is_err(),
            "never is the default"
        );
        let (forever, _) = build_new(req("y", Some("never")), &p, now, None).unwrap();
        let e = regenerate(&forever, &p, now, year).unwrap_err().to_string();
        assert!(e.starts_with("tokens.max_lifetime is 365d: "), "{e}");
        assert!(regenerate(&forever, &p, now, None).is_ok());
        assert_eq!(lifetime_text(std::time::Duration::from_secs(90)), "1m 30s");
    }
}
