//! The day range of a usage query (`from`, `to`: `YYYY-MM-DD` or an RFC 3339 time, UTC), as the
//! admin API and the CLI take it.

use chrono::{DateTime, Utc};

use super::{day_number, day_text, parse_day};

/// Longest range one query covers, in days.
pub const MAX_DAYS: i64 = 366;
/// Days covered when `from` is not given (ending at `to`).
pub const DEFAULT_DAYS: i64 = 30;

/// Inclusive days, as stored (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRange {
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
}

fn day_of(s: &str, field: &str) -> Result<i64, String> {
    let s = s.trim();
    parse_day(s)
        .or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| day_number(t.with_timezone(&Utc)))
        })
        .ok_or_else(|| format!("{field}: {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

impl DayRange {
    /// `from`..=`to`; `to` defaults to today, `from` to [`DEFAULT_DAYS`] days ending at `to`.
    /// Refuses bad dates, `from` after `to` and ranges over [`MAX_DAYS`].
    pub fn parse(from: Option<&str>, to: Option<&str>, now: DateTime<Utc>) -> Result<Self, String> {
        let to = match to {
            Some(t) => day_of(t, "to")?,
            None => day_number(now),
        };
        let from = match from {
            Some(f) => day_of(f, "from")?,
            None => to - (DEFAULT_DAYS - 1),
        };
        if from > to {
            return Err("from is after to".into());
        }
        if to - from + 1 > MAX_DAYS {
            return Err(format!("at most {MAX_DAYS} days at once"));
        }
        Ok(DayRange {
            from: day_text(from),
            to: day_text(to),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = DayRange::parse(None, None, now).unwrap();
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("2026-11-03", "2026-12-02")
        );
        let r =
            DayRange::parse(Some("2026-12-01T23:00:00-02:00"), Some("2026-12-02"), now).unwrap();
        assert_eq!(r.from, "2026-12-02");
        assert!(DayRange::parse(Some("2026-12-03"), Some("2026-12-02"), now).is_err());
        assert!(DayRange::parse(Some("2020-01-01"), None, now).is_err());
        assert!(DayRange::parse(Some("yesterday"), None, now)
            .unwrap_err()
            .starts_with("from: "));
    }
}
