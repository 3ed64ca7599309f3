//! Rate limits and quotas shared between replicas, wired into the application: the Redis
//! backend and its health check, the token database as the quotas' shared total when there is
//! no Redis, and the control-plane task that flushes the counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::Proxy;
use crate::shared::{Backend, Quotas, SharedLimits, Unavailable, UsageStore};
use crate::store::Store;

/// A `rate_limit.backend` URL that cannot be used, as a configuration problem.
pub(super) fn preflight(config: &Config) -> Option<crate::config::ConfigError> {
    let backend = config.rate_limit_backend.as_ref()?;
    let reason = Backend::new(backend).err()?;
    Some(config.origins.problem("rate_limit.backend", reason))
}

/// Shares `proxy`'s rate limits on Redis (`rate_limit.backend`: connected and health-checked on
/// the control plane until `stop`, its leases pruned every 5 s), or keeps its quota counts in
/// the token database when there is no Redis but a database; starts the quota flush.
pub(super) fn attach(
    config: &Config,
    mut proxy: Proxy,
    store: &Arc<Store>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Proxy> {
    match &config.rate_limit_backend {
        Some(backend) => {
            let backend = Backend::new(backend).map_err(anyhow::Error::msg)?;
            tokio::spawn(backend.clone().run(stop.clone()));
            let shared = SharedLimits::new(backend);
            proxy = proxy.with_shared(shared.clone());
            spawn_lease_maintenance(shared, store.clone(), stop.clone());
        }
        None if store.has_database() => {
            proxy = proxy.with_quota_store(Arc::new(DatabaseQuotaUsage(store.clone())));
        }
        None => {}
    }
    spawn_flush(proxy.quotas(), store.clone(), stop.clone());
    Ok(proxy)
}

/// Every 5 s, forgets the leases of tokens no longer in the set and of idle tokens.
fn spawn_lease_maintenance(
    shared: Arc<SharedLimits>,
    store: Arc<Store>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(super::MAINTENANCE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let snapshot = store.set.load();
                    shared.maintain(|id| snapshot.by_id(id).is_some());
                }
                _ = stop.changed() => return,
            }
        }
    });
}

/// Quota usage kept in the token database (when there is no Redis backend).
#[derive(Debug)]
pub(super) struct DatabaseQuotaUsage(pub(super) Arc<Store>);

/// Longest wait for the database on the request path (the first request of a token with a
/// quota in a period reads the total).
const QUOTA_DB_TIMEOUT: Duration = Duration::from_millis(250);

#[async_trait::async_trait]
impl UsageStore for DatabaseQuotaUsage {
    fn available(&self) -> bool {
        self.0.db().is_some()
    }

    async fn add(
        &self,
        id: &str,
        quota: &crate::token::Quota,
        window: u64,
        _resets_at: u64,
        add: (u64, u64),
    ) -> Result<(u64, u64), Unavailable> {
        let call = self
            .0
            .add_quota_usage(id, quota.period.as_secs(), window, add);
        match tokio::time::timeout(QUOTA_DB_TIMEOUT, call).await {
            Ok(Some(total)) => Ok(total),
            _ => Err(Unavailable),
        }
    }
}

/// Flushes the quota counts every [`crate::shared::FLUSH_INTERVAL`] until `stop`, forgetting
/// the counters of tokens no longer in the set.
fn spawn_flush(quotas: Arc<Quotas>, store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::shared::FLUSH_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let snapshot = store.set.load();
                    quotas.flush(|id| snapshot.by_id(id).is_some()).await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}
