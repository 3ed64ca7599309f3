//! A token's download quota: at most `requests` requests and `bytes` bytes sent per `period`
//! (`quota: {requests: 10000, bytes: 50GiB, period: 30d}`). Periods are fixed windows counted
//! from the Unix epoch, so every replica agrees on when one ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Requests and bytes a token may use per period (either may be absent: not limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per period.
    pub requests: Option<u64>,
    /// Bytes of response bodies sent per period.
    pub bytes: Option<u64>,
    /// Length of one period (1 s to 366 days).
    pub period: Duration,
}

impl Quota {
    /// The period `unix_now` falls in: its index and its end (Unix seconds).
    pub fn window(&self, unix_now: Duration) -> (u64, u64) {
        let period = self.period.as_secs().max(1);
        let index = unix_now.as_secs() / period;
        (index, index.saturating_add(1).saturating_mul(period))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<SizeRepr>,
    period: SizeRepr,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Number(u64),
    Text(String),
}

/// `50GiB`, `600KiB`, `1MB`, `1048576`: binary (KiB…TiB) and decimal (KB…TB) units.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 50GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{other:?} is not a unit (B, KiB, MiB, GiB, TiB, KB…)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl Serialize for Quota {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QuotaRepr {
            requests: self.requests,
            bytes: self.bytes.map(SizeRepr::Number),
            period: SizeRepr::Text(humantime::format_duration(self.period).to_string()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let repr = QuotaRepr::deserialize(d).map_err(|e| {
            D::Error::custom(format!(
                "quota must be {{requests: N, bytes: 50GiB, period: 30d}}: {e}"
            ))
        })?;
        let bytes = match repr.bytes {
            None => None,
            Some(SizeRepr::Number(n)) => Some(n),
            Some(SizeRepr::Text(t)) => {
                Some(parse_bytes(&t).map_err(|e| D::Error::custom(format!("quota.bytes: {e}")))?)
            }
        };
        let period = match repr.period {
            SizeRepr::Number(s) => Duration::from_secs(s),
            SizeRepr::Text(t) => humantime::parse_duration(&t)
                .map_err(|e| D::Error::custom(format!("quota.period {t:?}: {e}")))?,
        };
        let quota = Quota {
            requests: repr.requests,
            bytes,
            period,
        };
        quota.validate().map_err(D::Error::custom)
    }
}

impl Quota {
    /// Checks the ranges: a period of 1 s to 366 days, and at least one of the two limits.
    pub fn validate(self) -> Result<Self, String> {
        if self.period < Duration::from_secs(1) || self.period > Duration::from_secs(366 * 86400) {
            return Err("quota.period must be between 1s and 366d".into());
        }
        if self.requests.is_none() && self.bytes.is_none() {
            return Err("quota needs requests, bytes or both".into());
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_periods_and_windows() {
        assert_eq!(parse_bytes("50GiB"), Ok(50 << 30));
        assert_eq!(parse_bytes("600KiB"), Ok(600 * 1024));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("17"), Ok(17));
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
        let q: Quota =
            serde_yaml_ng::from_str("{requests: 10000, bytes: 50GiB, period: 30d}").unwrap();
        assert_eq!(q.requests, Some(10000));
        assert_eq!(q.bytes, Some(50 << 30));
        assert_eq!(q.period, Duration::from_secs(30 * 86400));
        let back: Quota = serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&q).unwrap()).unwrap();
        assert_eq!(back, q);
        assert!(serde_yaml_ng::from_str::<Quota>("{period: 1d}").is_err());
        assert!(serde_yaml_ng::from_str::<Quota>("{requests: 1, period: 0s}").is_err());
        assert!(serde_yaml_ng::from_str::<Quota>("{requests: 1, period: 1d, colour: 1}").is_err());
        let day = Quota {
            requests: Some(1),
            bytes: None,
            period: Duration::from_secs(86400),
        };
        assert_eq!(
            day.window(Duration::from_secs(86400 * 3 + 5)),
            (3, 86400 * 4)
        );
    }
}
