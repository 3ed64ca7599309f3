//! Expiry choices: `30d`, `90d`, `365d` (any whole number of days), `never`, or an RFC 3339
//! date-time (or a plain `YYYY-MM-DD`, meaning midnight UTC). Pure: `now` is passed in.

use chrono::{DateTime, Duration, NaiveDate, Utc};

/// Turns an expiry choice into a date (or `None` for never). Dates must lie in the future.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s == "never" {
        return Ok(None);
    }
    let at = if let Some(days) = s.strip_suffix('d') {
        let n: i64 = days
            .parse()
            .map_err(|_| format!("{s:?} is not 30d, 90d, 365d, never or a date"))?;
        if !(1..=3650).contains(&n) {
            return Err(format!("{s:?}: days must be between 1 and 3650"));
        }
        now + Duration::days(n)
    } else if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.with_timezone(&Utc)
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(|| format!("{s:?} is not a valid date"))?
    } else {
        return Err(format!(
            "{s:?} is not 30d, 90d, 365d, never or an RFC 3339 date"
        ));
    };
    if at <= now {
        return Err(format!("{s:?} lies in the past"));
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_expiry("never", now), Ok(None));
        assert_eq!(
            parse_expiry("30d", now).unwrap().unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("365d", now).unwrap().unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("2026-06-01T12:00:00+02:00", now)
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2026-06-01T10:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("2026-03-01", now)
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        for bad in ["0d", "-1d", "99999d", "soon", "2025-01-01", "30 days", ""] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }
}
