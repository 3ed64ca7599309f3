//! Overlapping rotation, on the store's side: a regeneration that keeps the replaced secret
//! working for an overlap (`POST /api/v1/tokens/{id}/regenerate {"overlap": "24h"}`, `tollgate
//! token regenerate NAME --overlap 24h`), the bounds on that overlap, and clearing a previous
//! secret from the database once it died (at the first use of the new secret, or at the
//! deadline; see `crate::auth::rotation`).
//!
//! Only database tokens rotate with an overlap. Token files are refused a previous secret
//! (their entries have no such field): Tollgate never writes them, so "retired at the first
//! use of the new secret" could not be recorded and would come back on every restart and on
//! every other replica; a file's author rotates by adding a second entry and removing the old
//! one later, which is an overlap they control.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;

use super::lifetime::lifetime_text;
use super::{ChangeError, Store};
use crate::token::{PreviousSecret, Token};

/// The body of a regeneration (every field optional; an empty body is no overlap).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    /// How long the replaced secret keeps working (`24h`, `7d`); absent: not at all.
    #[serde(default)]
    pub overlap: Option<String>,
}

/// Reads an overlap (`24h`, `90m`, `7d`) and checks it against its bounds: at least 1 s, at
/// most `tokens.max_overlap` (`max_overlap`) and at most `tokens.max_lifetime` (`max_lifetime`,
/// when set). The message names the bound.
pub fn parse_overlap(
    text: &str,
    max_overlap: Duration,
    max_lifetime: Option<Duration>,
) -> Result<Duration, ChangeError> {
    let bad = |m: String| ChangeError::Invalid(format!("overlap: {m}"));
    if text.len() > 64 {
        return Err(bad("too long".into()));
    }
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        bad(format!(
            "{text:?} is not a duration such as 24h or 7d ({e})"
        ))
    })?;
    if d < Duration::from_secs(1) {
        return Err(bad("must be at least 1s".into()));
    }
    if d > max_overlap {
        return Err(bad(format!(
            "{} is longer than tokens.max_overlap ({})",
            lifetime_text(d),
            lifetime_text(max_overlap)
        )));
    }
    if let Some(max) = max_lifetime.filter(|m| d > *m) {
        return Err(bad(format!(
            "{} is longer than tokens.max_lifetime ({})",
            lifetime_text(d),
            lifetime_text(max)
        )));
    }
    Ok(d)
}

/// The regenerated record `regenerated` of `current`, keeping `current`'s secret working for
/// `overlap` after `now` (stored to the millisecond, as read back).
pub fn with_overlap(
    current: &Token,
    mut regenerated: Token,
    overlap: Duration,
    now: DateTime<Utc>,
) -> Token {
    let until = chrono::Duration::from_std(overlap)
        .ok()
        .and_then(|d| now.trunc_subsecs(3).checked_add_signed(d));
    regenerated.previous = until.map(|valid_until| PreviousSecret {
        hash: current.hash.clone(),
        valid_until,
    });
    regenerated
}

impl Store {
    /// Clears token `id`'s previous secret from the database (if still at `generation`) and
    /// applies the change at once; true when this call cleared it (false: already gone).
    pub async fn retire_previous(
        &self,
        id: &str,
        generation: u64,
    ) -> Result<bool, super::db::DbError> {
        let Some(db) = self.db() else {
            return Ok(false);
        };
        let cleared = db.retire_previous(id, generation).await?;
        if cleared {
            if let Err(e) = self.rebuild().await {
                tracing::warn!(error = %e, "token set not rebuilt after retiring a previous secret; the follower retries");
            }
        }
        Ok(cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_bounds() {
        let month = Duration::from_secs(30 * 86_400);
        let year = Some(Duration::from_secs(365 * 86_400));
        assert_eq!(
            parse_overlap("24h", month, year).unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_overlap("2s", month, None).unwrap(),
            Duration::from_secs(2)
        );
        let e = parse_overlap("31d", month, year).unwrap_err().to_string();
        assert!(e.contains("longer than tokens.max_overlap (30d)"), "{e}");
        let e = parse_overlap("2d", month, Some(Duration::from_secs(86_400)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than tokens.max_lifetime (1d)"), "{e}");
        for bad in ["0s", "soon", "", "-1h", &"9".repeat(100)] {
            assert!(parse_overlap(bad, month, year).is_err(), "{bad}");
        }
    }
}
