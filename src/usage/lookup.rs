//! The reverse lookup by package: which tokens fetched a package (of one or more ecosystems,
//! one version or all), with their totals and, per version, what each fetched. Rows are found by
//! the `package` column (index `usage_daily_by_package`), so the lookup costs the package's rows
//! only, whatever the paths they were fetched by.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::db::{address_counts, token_totals, unavailable, Totals, MAX_TOKENS_SHOWN, SUMS};
use crate::scope::name::normalize;
use crate::scope::Ecosystem;
use crate::store::db::{Database, DbError};

/// The packages a lookup by `name` means: in `ecosystem` when given (`composer`, `npm`, …),
/// else in every ecosystem of `configured` (the layouts' kinds; all five when there is none)
/// whose rules accept the name; each in its ecosystem's normal form (PyPI PEP 503, cargo
/// lowercase with `_` as `-`, Composer lowercase, npm and Maven as written).
pub fn packages_named(
    name: &str,
    ecosystem: Option<&str>,
    configured: impl IntoIterator<Item = Ecosystem>,
) -> Result<Vec<(Ecosystem, String)>, String> {
    let name = name.trim();
    let candidates: Vec<Ecosystem> = match ecosystem {
        Some(e) => vec![Ecosystem::parse(e).ok_or_else(|| {
            format!("ecosystem: {e:?} is not one of composer, npm, pypi, cargo, maven")
        })?],
        None => {
            let mut c: Vec<Ecosystem> = configured.into_iter().collect();
            c.sort();
            c.dedup();
            if c.is_empty() {
                Ecosystem::ALL.to_vec()
            } else {
                c
            }
        }
    };
    let found: Vec<(Ecosystem, String)> = candidates
        .iter()
        .filter_map(|e| normalize(*e, name).map(|n| (*e, n)))
        .collect();
    if found.is_empty() {
        let kinds: Vec<&str> = candidates.iter().map(|e| e.as_str()).collect();
        return Err(format!(
            "package: {name:?} is not a package name of {}",
            kinds.join(", ")
        ));
    }
    Ok(found)
}

/// What a token fetched of one version (or of the package's metadata: no version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionUsage {
    /// The ecosystem.
    pub ecosystem: String,
    /// The version as the paths wrote it; `null`: the package's metadata (no version).
    pub version: Option<String>,
    /// Requests.
    pub requests: i64,
    /// Response body bytes sent.
    pub bytes_sent: i64,
    /// Last request.
    pub last_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One token's use of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageTokenUsage {
    /// The token's id.
    pub token_id: String,
    /// Days with at least one request.
    pub days: i64,
    /// The totals over every version.
    #[serde(flatten)]
    pub totals: Totals,
    /// Per version, most requests first.
    pub versions: Vec<VersionUsage>,
}

/// The condition on (`ecosystem`, `package`, `version`) shared by both tables, columns of
/// `table` (an alias, or `""`): `$1`, `$2` the range, `$3` the version (`''`: any), from `$4`
/// the (ecosystem, package) pairs.
fn condition(table: &str, packages: usize) -> String {
    let t = if table.is_empty() {
        String::new()
    } else {
        format!("{table}.")
    };
    let pairs: Vec<String> = (0..packages)
        .map(|i| {
            format!(
                "({t}ecosystem = ${} AND {t}package = ${})",
                4 + 2 * i,
                5 + 2 * i
            )
        })
        .collect();
    format!(
        "{t}day >= $1 AND {t}day <= $2 AND ($3 = '' OR {t}version = $3) AND ({})",
        pairs.join(" OR ")
    )
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    from: &'q str,
    to: &'q str,
    packages: &'q [(Ecosystem, String)],
    version: Option<&'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = q.bind(from).bind(to).bind(version.unwrap_or(""));
    for (eco, name) in packages {
        q = q.bind(eco.as_str()).bind(name.as_str());
    }
    q
}

/// Which tokens fetched any of `packages` (ecosystem, normal form) from `from` to `to`
/// (inclusive), only `version` when given: per token the totals, days and distinct addresses,
/// and per version its requests, bytes and last time; most requests first.
pub async fn package_usage(
    db: &Database,
    packages: &[(Ecosystem, String)],
    version: Option<&str>,
    from: &str,
    to: &str,
    max_addresses: usize,
) -> Result<Vec<PackageTokenUsage>, DbError> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let cond = condition("", packages.len());
    let sql = format!(
        "SELECT token_id, COUNT(DISTINCT day), {SUMS} FROM usage_daily WHERE {cond} \
         GROUP BY token_id ORDER BY SUM(requests) DESC, token_id LIMIT {MAX_TOKENS_SHOWN}"
    );
    let rows = bind(sqlx::query(&sql), from, to, packages, version)
        .fetch_all(db.pool())
        .await
        .map_err(unavailable)?;
    let sql = format!(
        "SELECT token_id, ecosystem, version, CAST(SUM(requests) AS BIGINT), \
         CAST(SUM(bytes_sent) AS BIGINT), MAX(last_at) FROM usage_daily WHERE {cond} \
         GROUP BY token_id, ecosystem, version ORDER BY SUM(requests) DESC, version"
    );
    let version_rows = bind(sqlx::query(&sql), from, to, packages, version)
        .fetch_all(db.pool())
        .await
        .map_err(unavailable)?;
    let mut versions: HashMap<String, Vec<VersionUsage>> = HashMap::new();
    for r in &version_rows {
        let id: String = r.try_get(0).map_err(unavailable)?;
        let v: String = r.try_get(2).map_err(unavailable)?;
        let num = |i: usize| -> Result<i64, DbError> {
            r.try_get::<Option<i64>, _>(i)
                .map(Option::unwrap_or_default)
                .map_err(unavailable)
        };
        versions.entry(id).or_default().push(VersionUsage {
            ecosystem: r.try_get(1).map_err(unavailable)?,
            version: Some(v).filter(|v| !v.is_empty()),
            requests: num(3)?,
            bytes_sent: num(4)?,
            last_at: r
                .try_get::<Option<i64>, _>(5)
                .map_err(unavailable)?
                .and_then(chrono::DateTime::from_timestamp_millis),
        });
    }
    // Distinct addresses per token over the package's rows; capped when one row reached
    // the bound (its count is then a lower bound).
    let sql = format!(
        "SELECT token_id, COUNT(DISTINCT address), MAX(n) FROM (SELECT a.token_id, a.address, \
         (SELECT COUNT(*) FROM usage_addresses b WHERE b.token_id = a.token_id AND b.day = a.day \
         AND b.usage_key = a.usage_key) AS n FROM usage_addresses a WHERE {}) t GROUP BY token_id",
        condition("a", packages.len())
    );
    let addr_rows = bind(sqlx::query(&sql), from, to, packages, version)
        .fetch_all(db.pool())
        .await
        .map_err(unavailable)?;
    let addresses = address_counts(&addr_rows, max_addresses)?;
    rows.iter()
        .map(|r| {
            let (token_id, days, totals) = token_totals(r, &addresses)?;
            Ok(PackageTokenUsage {
                days,
                versions: versions.remove(&token_id).unwrap_or_default(),
                token_id,
                totals,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_numbers_its_placeholders_after_the_range() {
        assert_eq!(
            condition("", 2),
            "day >= $1 AND day <= $2 AND ($3 = '' OR version = $3) AND \
             ((ecosystem = $4 AND package = $5) OR (ecosystem = $6 AND package = $7))"
        );
        assert!(condition("a", 1).starts_with("a.day >= $1 AND a.day <= $2"));
        assert!(condition("a", 1).ends_with("(a.ecosystem = $4 AND a.package = $5))"));
    }

    #[test]
    fn names_are_read_per_ecosystem() {
        use Ecosystem::*;
        let all = Ecosystem::ALL;
        assert_eq!(
            packages_named("Acme/Widget", None, all).unwrap(),
            [(Composer, "acme/widget".to_string())]
        );
        assert_eq!(
            packages_named("Acme_Widget", None, [Pypi, Cargo, Npm, Pypi]).unwrap(),
            [
                (Npm, "Acme_Widget".to_string()),
                (Pypi, "acme-widget".to_string()),
                (Cargo, "acme-widget".to_string())
            ]
        );
        assert_eq!(
            packages_named("acme.widget", Some("pypi"), []).unwrap(),
            [(Pypi, "acme-widget".to_string())]
        );
        assert_eq!(
            packages_named("com.acme:widget", None, []).unwrap(),
            [(Maven, "com.acme:widget".to_string())]
        );
        assert!(packages_named("acme/widget", Some("npm"), all).is_err());
        assert!(packages_named("acme/widget", Some("rubygems"), all).is_err());
        assert!(packages_named("acme/widget", None, [Pypi]).is_err());
    }
}
