//! Webhooks: token events POSTed as JSON to the configured URLs, signed with HMAC-SHA256 over
//! the body in `X-Tollgate-Signature-256: sha256=<hex>` (GitHub's scheme), from a bounded
//! queue, each delivery retried with backoff, every attempt counted in
//! `tollgate_webhook_deliveries_total{result}`.
//!
//! Events come from the admin API (created, regenerated, revoked), from a periodic look at the
//! token set (`token.expiring`, once per token at 30 and at 7 days before expiry) and from the
//! usage ledger (`token.anomaly`). Events every replica notices (expiring, anomaly) carry a
//! claim key: before sending, one row is inserted in `webhook_claims`, and only the replica
//! whose insert succeeds sends, so each is sent once however many replicas share the
//! database; the rows also remember which expiry notices went out across restarts.

mod deliver;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{WebhookConfig, WebhookEvent, WebhookSecret};
use crate::metrics::METRICS;
use crate::store::Store;
use crate::token::{Secret, Source, Token};
use crate::usage::{Anomaly, Ledger};

pub use deliver::signature;

/// Events waiting to be sent, at most (beyond: dropped, counted as `dropped`).
const QUEUE: usize = 1024;
/// How often the token set is looked at for expiring tokens (and anomalies collected).
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The windows of `token.expiring`, tightest first: the label and its length in days.
const EXPIRY_WINDOWS: [(&str, i64); 2] = [("7d", 7), ("30d", 30)];

/// A configured webhook with its secret resolved.
pub struct Hook {
    url: String,
    /// The URL's scheme, host and port: what logs show (a path may hold a credential).
    shown: String,
    secret: Secret,
    events: Vec<WebhookEvent>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("url", &self.shown)
            .field("events", &self.events)
            .finish()
    }
}

/// Resolves each webhook's secret (`secret_env`, `secret_file`); every problem names its
/// field. The secret never appears in a message.
pub fn resolve(configs: &[WebhookConfig]) -> Result<Vec<Hook>, Vec<String>> {
    let mut hooks = Vec::with_capacity(configs.len());
    let mut problems = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let secret = match &c.secret {
            WebhookSecret::Value(s) => Ok(s.clone()),
            WebhookSecret::Env(name) => std::env::var(name)
                .map(|v| Secret::new(v.trim()))
                .map_err(|_| format!("webhooks[{i}].secret_env: {name} is not set")),
            WebhookSecret::File(path) => std::fs::read_to_string(path)
                .map(|v| Secret::new(v.trim()))
                .map_err(|e| format!("webhooks[{i}].secret_file: {}: {e}", path.display())),
        }
        .and_then(|s| {
            if s.expose().len() < 16 {
                Err(format!(
                    "webhooks[{i}].secret: must be at least 16 characters"
                ))
            } else {
                Ok(s)
            }
        });
        match secret {
            Ok(secret) => hooks.push(Hook {
                url: c.url.clone(),
                shown: match c.url.parse::<http::Uri>() {
                    Ok(u) => format!(
                        "{}://{}",
                        u.scheme_str().unwrap_or("http"),
                        u.authority()
                            .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
                            .unwrap_or("")
                    ),
                    Err(_) => String::new(),
                },
                secret,
                events: c.events.clone(),
            }),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(hooks)
    } else {
        Err(problems)
    }
}

/// One event to send.
#[derive(Debug, Clone)]
struct Event {
    kind: WebhookEvent,
    /// Claimed in the database before sending (events every replica notices).
    claim: Option<String>,
    body: Value,
}

/// The webhook sender: [`Webhooks::emit`] queues, a control-plane task delivers.
pub struct Webhooks {
    tx: mpsc::Sender<Event>,
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
    hooks: Arc<[Hook]>,
    store: Arc<Store>,
    ledger: Option<Arc<Ledger>>,
    /// Expiry notices queued by this process (the database's claims span processes).
    expiring_sent: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("hooks", &self.hooks)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn token_json(t: &Token) -> Value {
    json!({
        "id": &*t.id,
        "name": &*t.name,
        "permission": t.permission,
        "expires_at": t.expires_at,
        "source": t.source.kind(),
    })
}

impl Webhooks {
    /// Starts the sender of `hooks` on this runtime (until `stop` fires); `None` when there
    /// are none.
    pub fn start(
        hooks: Vec<Hook>,
        store: &Arc<Store>,
        ledger: &Option<Arc<Ledger>>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<Arc<Self>> {
        if hooks.is_empty() {
            return None;
        }
        let w = Self::new(hooks, store.clone(), ledger.clone());
        tokio::spawn(w.clone().run(stop));
        Some(w)
    }

    /// A sender for `hooks`; `ledger` (when there is one) supplies anomalies and the database
    /// of the claims.
    pub fn new(hooks: Vec<Hook>, store: Arc<Store>, ledger: Option<Arc<Ledger>>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Some(l) = &ledger {
            if hooks
                .iter()
                .any(|h| h.events.contains(&WebhookEvent::Anomaly))
            {
                l.want_anomalies();
            }
        }
        Arc::new(Webhooks {
            tx,
            rx: Mutex::new(Some(rx)),
            hooks: hooks.into(),
            store,
            ledger,
            expiring_sent: Mutex::new(HashSet::new()),
        })
    }

    fn wanted(&self, kind: WebhookEvent) -> bool {
        self.hooks.iter().any(|h| h.events.contains(&kind))
    }

    fn queue(&self, kind: WebhookEvent, claim: Option<String>, data: Value) {
        if !self.wanted(kind) {
            return;
        }
        let mut body = json!({
            "event": kind.as_str(),
            "sent_at": Utc::now(),
        });
        if let (Value::Object(b), Value::Object(d)) = (&mut body, data) {
            b.extend(d);
        }
        if self.tx.try_send(Event { kind, claim, body }).is_err() {
            METRICS
                .webhook_deliveries
                .with_label_values(&["dropped"])
                .inc();
            tracing::warn!(
                event = kind.as_str(),
                "webhook event dropped: the queue is full"
            );
        }
    }

    /// Queues a token event (`token.created`, `.regenerated`, `.revoked`) made by `actor`.
    pub fn token_event(&self, kind: WebhookEvent, token: &Token, actor: &Token) {
        self.queue(
            kind,
            None,
            json!({"token": token_json(token), "actor": {"id": &*actor.id, "name": &*actor.name}}),
        );
    }

    /// Queues `token.expiring` for tokens of the live set inside a window they were not
    /// notified of yet (the tightest window only: a token made 5 days before its expiry gets
    /// the 7-day notice, never the 30-day one).
    pub fn check_expiring(&self, now: DateTime<Utc>) {
        if !self.wanted(WebhookEvent::Expiring) {
            return;
        }
        let snap = self.store.set.load();
        for t in snap.iter() {
            let Some(expires) = t.expires_at else {
                continue;
            };
            // Minted (trusted-publishing) tokens live minutes by design: no notice for them.
            if matches!(t.source, Source::Bootstrap | Source::Oidc(_)) || expires <= now {
                continue;
            }
            let left = expires - now;
            let Some((window, _)) = EXPIRY_WINDOWS
                .iter()
                .find(|(_, days)| left <= chrono::Duration::days(*days))
            else {
                continue;
            };
            let claim = format!(
                "token.expiring:{}:{window}:{}",
                t.id,
                expires.timestamp_millis()
            );
            if !lock(&self.expiring_sent).insert(claim.clone()) {
                continue;
            }
            self.queue(
                WebhookEvent::Expiring,
                Some(claim),
                json!({"token": token_json(t), "window": window, "expires_at": expires}),
            );
        }
    }

    fn anomaly(&self, a: Anomaly) {
        let snap = self.store.set.load();
        let token = match snap.by_id(&a.token) {
            Some(t) => token_json(t),
            None => json!({"id": &*a.token}),
        };
        let hour = DateTime::<Utc>::from_timestamp(a.hour * 3600, 0);
        let bound = self
            .ledger
            .as_ref()
            .map(|l| l.config().anomaly_addresses)
            .unwrap_or_default();
        self.queue(
            WebhookEvent::Anomaly,
            Some(format!("token.anomaly:{}:{}", a.token, a.hour)),
            json!({
                "token": token,
                "hour": hour,
                "addresses": a.addresses.len(),
                "threshold": bound,
                "sample": a.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        );
    }

    /// Control-plane task: delivers queued events and looks for expiring tokens and anomalies
    /// until `stop` fires.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(mut rx) = lock(&self.rx).take() else {
            return;
        };
        let client = deliver::client();
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sending = Arc::new(tokio::sync::Semaphore::new(deliver::MAX_IN_FLIGHT));
        loop {
            tokio::select! {
                _ = check.tick() => {
                    if self.store.set.is_ready() {
                        self.check_expiring(Utc::now());
                    }
                    if let Some(l) = &self.ledger {
                        for a in l.take_anomalies() {
                            self.anomaly(a);
                        }
                    }
                }
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    let Ok(permit) = sending.clone().acquire_owned().await else { return };
                    let this = self.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        this.send(&client, event).await;
                        drop(permit);
                    });
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Claims the event (when it needs a claim), then delivers it to every hook that wants it.
    async fn send(&self, client: &reqwest::Client, event: Event) {
        let db = self
            .ledger
            .as_ref()
            .and_then(|l| l.database())
            .or(self.store.db());
        if let (Some(key), Some(db)) = (&event.claim, db) {
            match crate::usage::db::claim(db, key, Utc::now().timestamp_millis()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, event = event.kind.as_str(), "webhook claim failed; will try again");
                    lock(&self.expiring_sent).remove(key);
                    return;
                }
            }
        }
        let body = match serde_json::to_vec(&event.body) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return,
        };
        let mut delivered = false;
        for hook in self.hooks.iter().filter(|h| h.events.contains(&event.kind)) {
            delivered |= deliver::deliver(client, hook, event.kind, body.clone()).await;
        }
        // No hook took it: give the claim back, so a later check (of this replica or another)
        // sends it again rather than never.
        if let (false, Some(key), Some(db)) = (delivered, &event.claim, db) {
            if let Err(e) = crate::usage::db::unclaim(db, key).await {
                tracing::warn!(error = %e, "giving a webhook claim back failed");
            }
            lock(&self.expiring_sent).remove(key);
        }
    }
}
