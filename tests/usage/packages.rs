//! The ledger keyed by package under `upstream.layouts`: downloads of two versions by two
//! tokens are looked up by package (API and CLI) with exact counts per version; names are read
//! in each ecosystem's normal form; listings and unknown paths keep their path key; two
//! PostgreSQL replicas add into the same package rows.

use serde_json::{json, Value};
use sqlx::Row;

use super::{sqlite, token_usage, wait_requests};
use crate::common::*;

/// Every ecosystem under its own prefix; Composer at the root, its dists versioned.
fn layouts() -> Value {
    json!([
        {"kind": "composer", "prefix": "/", "dist": ["dist/{vendor}/{package}/{version}/{file}"]},
        {"kind": "npm", "prefix": "/npm/"},
        {"kind": "pypi", "prefix": "/pypi/"},
        {"kind": "cargo", "prefix": "/cargo/"},
        {"kind": "maven", "prefix": "/maven/"},
    ])
}

const V231: &str = "/dist/acme/widget/2.3.1/acme-widget-2.3.1.zip";
const V230: &str = "/dist/acme/widget/2.3.0/acme-widget-2.3.0.zip";

/// The upstream's body for `path`.
fn body_len(path: &str) -> i64 {
    format!("hello {path}").len() as i64
}

async fn get_n(t: &Tollgate, token: &TestToken, path: &str, n: usize) {
    let client = client();
    for _ in 0..n {
        let r = http_get(&client, &t.url(path), Some(&token.auth())).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

async fn lookup(t: &Tollgate, query: &str) -> Value {
    t.api(
        "GET",
        &format!("/api/v1/usage?{query}"),
        Some(&boot()),
        None,
    )
    .await
    .expect(200)
}

/// (version, requests, bytes) of a token's entry in a lookup.
fn versions(token: &Value) -> Vec<(Option<String>, i64, i64)> {
    token["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().map(str::to_string),
                v["requests"].as_i64().unwrap(),
                v["bytes_sent"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_versions_fetched_by_two_tokens_are_looked_up_by_package_with_counts_per_version() {
    let upstream = Upstream::start();
    let a = TestToken::read("alice");
    let b = TestToken::read("bob");
    let t = Setup::new(&upstream.url())
        .with_tokens(&[&a, &b])
        .with_bootstrap()
        .set("upstream.layouts", layouts())
        .set("usage", json!({"flush_interval": "200ms"}))
        .start()
        .await;
    get_n(&t, &a, V231, 3).await;
    get_n(&t, &a, V230, 1).await;
    // The package's metadata: the package without a version.
    get_n(&t, &a, "/p2/acme/widget.json", 2).await;
    // A listing and a path no layout names keep their path key.
    get_n(&t, &a, "/packages.json", 1).await;
    get_n(&t, &a, "/files/readme.txt", 1).await;
    get_n(&t, &b, V231, 2).await;
    // The same name read as another ecosystem's package: npm, PyPI (normalized).
    get_n(&t, &b, "/npm/@acme/widget/-/widget-1.0.0.tgz", 1).await;
    get_n(
        &t,
        &b,
        "/pypi/packages/Acme_Widget-2.3.1-py3-none-any.whl",
        1,
    )
    .await;
    get_n(&t, &b, "/pypi/simple/acme.widget/", 1).await;
    wait_requests(&t, &a.id, 8).await;
    wait_requests(&t, &b.id, 5).await;

    // Which tokens pulled acme/widget 2.3.1?
    let r = lookup(&t, "package=acme/widget&version=2.3.1").await;
    assert_eq!(
        r["packages"],
        json!([{"ecosystem": "composer", "package": "acme/widget"}])
    );
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{r}");
    assert_eq!(tokens[0]["token_id"], a.id.as_str());
    assert_eq!(tokens[0]["token_name"], "alice");
    assert_eq!(tokens[0]["requests"], 3);
    assert_eq!(tokens[0]["bytes_sent"], 3 * body_len(V231));
    assert_eq!(tokens[0]["days"], 1);
    assert_eq!(tokens[0]["addresses"], 1);
    assert!(tokens[0]["first_at"].is_string() && tokens[0]["last_at"].is_string());
    assert_eq!(
        versions(&tokens[0]),
        [(Some("2.3.1".into()), 3, 3 * body_len(V231))]
    );
    assert_eq!(tokens[1]["token_id"], b.id.as_str());
    assert_eq!(tokens[1]["requests"], 2);
    assert_eq!(
        versions(&tokens[1]),
        [(Some("2.3.1".into()), 2, 2 * body_len(V231))]
    );

    // Every version, names in any spelling Composer reads as the same package.
    let r = lookup(&t, "package=ACME/Widget").await;
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{r}");
    assert_eq!(tokens[0]["token_id"], a.id.as_str());
    assert_eq!(tokens[0]["requests"], 6, "{r}");
    assert_eq!(
        versions(&tokens[0]),
        [
            (Some("2.3.1".into()), 3, 3 * body_len(V231)),
            (None, 2, 2 * body_len("/p2/acme/widget.json")),
            (Some("2.3.0".into()), 1, body_len(V230)),
        ]
    );
    assert_eq!(tokens[1]["requests"], 2);

    // A plain name is looked for in every layout ecosystem that accepts it.
    let r = lookup(&t, "package=Acme_Widget").await;
    assert_eq!(
        r["packages"],
        json!([
            {"ecosystem": "npm", "package": "Acme_Widget"},
            {"ecosystem": "pypi", "package": "acme-widget"},
            {"ecosystem": "cargo", "package": "acme-widget"},
        ])
    );
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{r}");
    assert_eq!(tokens[0]["token_id"], b.id.as_str());
    assert_eq!(tokens[0]["requests"], 2);
    let mut v = versions(&tokens[0]);
    v.sort();
    assert_eq!(
        v.iter()
            .map(|(v, n, _)| (v.clone(), *n))
            .collect::<Vec<_>>(),
        [(None, 1), (Some("2.3.1".into()), 1)]
    );
    let r = lookup(&t, "package=acme-widget&ecosystem=cargo").await;
    assert_eq!(r["tokens"], json!([]));
    let r = lookup(&t, "package=@acme/widget&version=1.0.0").await;
    assert_eq!(r["tokens"][0]["token_id"], b.id.as_str());
    assert_eq!(r["tokens"][0]["versions"][0]["ecosystem"], "npm");
    // Nothing before today.
    let r = lookup(&t, "package=acme/widget&from=2020-01-01&to=2020-01-31").await;
    assert_eq!(r["tokens"], json!([]));
    // path= keeps working for what is keyed by path.
    let r = lookup(&t, "path=/packages.json").await;
    assert_eq!(r["tokens"][0]["requests"], 1, "{r}");

    for bad in [
        "package=acme/widget&ecosystem=rubygems",
        "package=acme/widget&ecosystem=npm",
        "package=a%20b",
        "package=acme/widget&version=",
        "package=acme/widget&path=/p2/acme/widget.json",
        "path=/x&version=1.0",
        "ecosystem=npm",
    ] {
        t.api("GET", &format!("/api/v1/usage?{bad}"), Some(&boot()), None)
            .await
            .expect_error(400, "invalid_request");
    }

    // A token's usage names the package keys' parts.
    let u = token_usage(&t, &a.id).await;
    let keys = u["paths"].as_array().unwrap();
    assert_eq!(keys[0]["key"], "pkg:composer/acme/widget@2.3.1", "{u}");
    assert_eq!(keys[0]["ecosystem"], "composer");
    assert_eq!(keys[0]["package"], "acme/widget");
    assert_eq!(keys[0]["version"], "2.3.1");
    assert_eq!(keys[0]["requests"], 3);
    let listing = keys.iter().find(|k| k["key"] == "/packages.json").unwrap();
    assert!(listing.get("package").is_none(), "{listing}");
    assert!(keys.iter().any(|k| k["key"] == "/files/readme.txt"));
    assert!(
        keys.iter()
            .any(|k| k["key"] == "pkg:composer/acme/widget" && k.get("version").is_none()),
        "{u}"
    );

    // The stored rows carry the parts, for the reverse lookup's index.
    let db = sqlite(&t).await;
    let row = sqlx::query(
        "SELECT ecosystem, package, version, requests FROM usage_daily \
         WHERE token_id = ? AND usage_key = ?",
    )
    .bind(&b.id)
    .bind("pkg:pypi/acme-widget@2.3.1")
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "pypi");
    assert_eq!(row.get::<String, _>(1), "acme-widget");
    assert_eq!(row.get::<String, _>(2), "2.3.1");
    assert_eq!(row.get::<i64, _>(3), 1);
    let addresses: i64 = sqlx::query(
        "SELECT COUNT(*) FROM usage_addresses WHERE package = 'acme/widget' AND version = '2.3.1'",
    )
    .fetch_one(&db)
    .await
    .unwrap()
    .get(0);
    assert_eq!(addresses, 2, "one address per token");
    db.close().await;

    // The CLI reads the same rows.
    let out = t
        .cli(
            &[
                "usage",
                "--package",
                "acme/widget",
                "--version",
                "2.3.1",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cli["tokens"][0]["requests"], 3);
    assert_eq!(cli["tokens"][1]["requests"], 2);
    let out = t
        .cli(
            &[
                "usage",
                "--package",
                "acme/widget",
                "--ecosystem",
                "composer",
            ],
            None,
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    for want in [a.id.as_str(), b.id.as_str(), "2.3.0", "(metadata)"] {
        assert!(out.stdout.contains(want), "{want}: {}", out.stdout);
    }
    let out = t
        .cli(
            &["usage", "--package", "acme/widget", "--ecosystem", "pypi"],
            None,
        )
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("not a package name"), "{}", out.stderr);
}

#[tokio::test]
async fn two_postgres_replicas_add_into_the_same_package_rows() {
    let upstream = Upstream::start();
    let mut pg = crate::common::pg::PgCluster::start();
    let url = pg.create_database("usage_packages");
    let a = TestToken::read("shared");
    let replica = || {
        Setup::new(&upstream.url())
            .with_tokens(&[&a])
            .set("tokens.database", json!(url))
            .with_bootstrap()
            .set("upstream.layouts", layouts())
            .set("usage", json!({"flush_interval": "200ms"}))
    };
    let r1 = replica().start().await;
    let r2 = replica().start().await;
    let new = "/npm/left-pad/-/left-pad-1.3.0.tgz";
    let old = "/npm/left-pad/-/left-pad-1.2.0.tgz";
    get_n(&r1, &a, new, 2).await;
    get_n(&r2, &a, new, 1).await;
    get_n(&r2, &a, old, 1).await;
    wait_requests(&r1, &a.id, 4).await;
    let r = lookup(&r1, "package=left-pad&ecosystem=npm").await;
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{r}");
    assert_eq!(tokens[0]["requests"], 4);
    assert_eq!(tokens[0]["bytes_sent"], 3 * body_len(new) + body_len(old));
    assert_eq!(
        versions(&tokens[0]),
        [
            (Some("1.3.0".into()), 3, 3 * body_len(new)),
            (Some("1.2.0".into()), 1, body_len(old)),
        ]
    );
    let r = lookup(&r2, "package=left-pad&version=1.2.0").await;
    assert_eq!(r["tokens"][0]["requests"], 1, "{r}");
    assert_eq!(r["tokens"][0]["addresses"], 1, "{r}");
    // Not keyed by path any more: the path lookup finds nothing.
    let r = lookup(&r1, &format!("path={new}")).await;
    assert_eq!(r["tokens"], json!([]));
}
