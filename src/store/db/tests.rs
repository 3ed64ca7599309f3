//! The database queries, on SQLite.
use super::*;
use crate::token::{self, compile_routes, Access, Permission, RateLimitRule, RouteSpec, Source};

fn sample(name: &str) -> Token {
    let g = token::generate();
    Token {
        id: Arc::from(g.id.as_str()),
        name: Arc::from(name),
        description: Some("d".into()),
        hash: token::validate_phc(
            &token::hash_secret(g.token.expose(), &token::HashParams::cheap()).unwrap(),
        )
        .unwrap(),
        permission: Permission::Write,
        routes: compile_routes(&[RouteSpec {
            path: "/p2/acme/*".into(),
            access: Access::Read,
        }])
        .unwrap(),
        created_at: Some(Utc::now()),
        expires_at: None,
        rate_limit: Some(RateLimitRule::Limited {
            requests: 5,
            period: Duration::from_secs(60),
        }),
        generation: 1,
        disabled: false,
        allowed_ips: Default::default(),
        previous: None,
        packages: Default::default(),
        source: Source::Database,
    }
}

#[tokio::test]
async fn round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sub/t.db", dir.path().display());
    let db = Database::open(&url).await.unwrap();
    let c0 = db.changes().await.unwrap();
    let t = sample("a");
    db.insert(&t).await.unwrap();
    assert!(db.changes().await.unwrap() > c0);
    assert_eq!(
        db.insert(&sample("a")).await,
        Err(DbError::DuplicateName("a".into()))
    );
    let back = db.token(&t.id).await.unwrap();
    assert_eq!(back.routes, t.routes);
    assert_eq!(back.rate_limit, t.rate_limit);
    assert_eq!(db.find("a").await.unwrap().id, t.id);
    let mut renamed = back.clone();
    renamed.name = Arc::from("b");
    renamed.generation = 2;
    db.update(&renamed, 1).await.unwrap();
    assert_eq!(
        db.update(&renamed, 1).await,
        Err(DbError::NotFound(t.id.to_string()))
    );
    assert_eq!(&*db.tokens().await.unwrap()[0].name, "b");
    assert!(!db.token(&t.id).await.unwrap().disabled);
    let mut off = renamed.clone();
    off.disabled = true;
    off.generation = 3;
    db.update(&off, 2).await.unwrap();
    assert!(db.token(&t.id).await.unwrap().disabled);
    let mut fenced = off.clone();
    fenced.allowed_ips = crate::token::AllowedIps::parse(&["10.0.0.0/8", "::1"]).unwrap();
    fenced.generation = 4;
    db.update(&fenced, 3).await.unwrap();
    assert_eq!(
        db.token(&t.id).await.unwrap().allowed_ips,
        fenced.allowed_ips
    );
    // A previous secret round-trips, and retiring it is done once, at its generation.
    let mut rotated = db.token(&t.id).await.unwrap();
    let until = from_millis(millis(Utc::now()) + 60_000).unwrap();
    rotated.previous = Some(crate::token::PreviousSecret {
        hash: t.hash.clone(),
        valid_until: until,
    });
    rotated.generation = 5;
    db.update(&rotated, 4).await.unwrap();
    let back = db.token(&t.id).await.unwrap();
    let p = back.previous.as_ref().expect("previous secret stored");
    assert_eq!((p.hash.as_str(), p.valid_until), (t.hash.as_str(), until));
    assert!(
        !db.retire_previous(&t.id, 4).await.unwrap(),
        "another generation"
    );
    let c = db.changes().await.unwrap();
    assert!(db.retire_previous(&t.id, 5).await.unwrap());
    assert!(db.changes().await.unwrap() > c, "other processes notice");
    assert!(
        !db.retire_previous(&t.id, 5).await.unwrap(),
        "already retired"
    );
    let back = db.token(&t.id).await.unwrap();
    assert!(back.previous.is_none() && back.generation == 5);
    let now = Utc::now();
    let use_at = |at, ip: &str, agent: &str| LastUse {
        at,
        ip: Some(ip.parse().unwrap()),
        user_agent: Some(Arc::from(agent)),
    };
    db.record_usage(&[(t.id.clone(), use_at(now, "127.0.0.2", "pip/24.0"))])
        .await
        .unwrap();
    db.record_usage(&[(
        t.id.clone(),
        use_at(now - chrono::Duration::hours(1), "10.0.0.9", "old"),
    )])
    .await
    .unwrap();
    let last = &db.usage().await.unwrap()[&*t.id];
    assert_eq!(last.at.timestamp_millis(), now.timestamp_millis());
    assert_eq!(last.ip, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(last.user_agent.as_deref(), Some("pip/24.0"));
    assert!(db.delete(&t.id).await.unwrap());
    assert!(!db.delete(&t.id).await.unwrap());
    assert!(db.tokens().await.unwrap().is_empty());
    // reopening keeps data and does not re-run migrations
    db.close().await;
    let again = Database::open(&url).await.unwrap();
    assert!(again.changes().await.unwrap() >= 3);
}
