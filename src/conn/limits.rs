//! Connection counters (in total and per client address) and the open-file limit the
//! default cap is derived from.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::IntCounter;

use crate::config::LimitsConfig;
use crate::metrics::METRICS;

/// Descriptors kept free for everything but client connections (listeners, runtimes, token
/// files, the database, logs, idle upstream connections) when `max_connections` is derived.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The cap on open client connections when `limits.max_connections` is `auto`: half the
/// open-file limit (a proxied connection holds two descriptors, the client's and the
/// upstream's) less [`RESERVED_DESCRIPTORS`]; a quarter of it below 1024 descriptors.
pub fn default_max_connections(nofile: u64) -> usize {
    let n = if nofile >= 4 * RESERVED_DESCRIPTORS {
        nofile / 2 - RESERVED_DESCRIPTORS
    } else {
        nofile / 4
    };
    usize::try_from(n.max(1)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit; returns the limit in
/// force afterwards.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let (soft, hard) = crate::sys::open_file_limit()?;
    let mut target = hard;
    if target == libc::RLIM_INFINITY {
        // Linux refuses an infinite NOFILE; its ceiling is fs.nr_open.
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if target > soft {
        if let Err(e) = crate::sys::set_open_file_limit(target, hard) {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            return Ok(soft);
        }
        return Ok(target);
    }
    Ok(soft)
}

/// Why a connection was refused (the `reason` label of `tollgate_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` reached.
    Total,
    /// `limits.max_connections_per_ip` reached for the client's address.
    PerIp,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// The connection caps and deadlines, with the counts of open connections.
pub struct Limits {
    pub(super) header_timeout: Duration,
    pub(super) keepalive_timeout: Duration,
    max_total: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize, foldhash::fast::RandomState>,
    refused: [IntCounter; 2],
    pub(super) header_timeouts: IntCounter,
    pub(super) keepalive_timeouts: IntCounter,
    started: Instant,
    /// Seconds since `started` of the last refusal logged, per reason (+1; 0 = never).
    last_logged: [AtomicU64; 2],
}

/// One open connection's place in the counts; given back on drop.
pub struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            if let dashmap::Entry::Occupied(mut e) = self.limits.per_ip.entry(ip) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        METRICS.connections_open.dec();
    }
}

impl Limits {
    /// Limits from the configuration; `max_total` is the resolved `max_connections`.
    pub fn new(config: &LimitsConfig, max_total: usize) -> Arc<Self> {
        let refused = |r: Refused| METRICS.connections_refused.with_label_values(&[r.label()]);
        let timeouts = |kind: &str| METRICS.connection_timeouts.with_label_values(&[kind]);
        METRICS.connections_max.set(max_total as i64);
        Arc::new(Limits {
            header_timeout: config.header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            max_total,
            max_per_ip: config.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_ip: DashMap::default(),
            refused: [refused(Refused::Total), refused(Refused::PerIp)],
            header_timeouts: timeouts("header"),
            keepalive_timeouts: timeouts("keepalive"),
            started: Instant::now(),
            last_logged: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Takes a slot for a connection from `ip`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let ip = ip.filter(|_| self.max_per_ip > 0);
        if let Some(ip) = ip {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(n);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        METRICS.connections_open.inc();
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Counts a refusal; logs it, at most once every 10 s per reason.
    pub(super) fn note_refused(&self, reason: Refused, ip: Option<IpAddr>) {
        let i = reason as usize;
        self.refused[i].inc();
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last_logged[i].load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self.last_logged[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason = reason.label(),
                client = ?ip,
                open = self.open(),
                max_connections = self.max_total,
                max_connections_per_ip = self.max_per_ip,
                "connection refused: too many connections (tollgate_connections_refused_total \
                 counts every refusal; this line repeats at most every 10 s)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_cap_leaves_descriptors_free() {
        assert_eq!(default_max_connections(1024), 256);
        assert_eq!(default_max_connections(20_000), 9_744);
        assert_eq!(default_max_connections(1 << 20), 524_032);
        assert_eq!(default_max_connections(512), 128);
        assert_eq!(default_max_connections(2), 1);
        for n in [64u64, 512, 1000, 1023, 1024, 1025, 4096, 65_536, 1 << 20] {
            let cap = default_max_connections(n) as u64;
            assert!(2 * cap < n, "{n}: {cap} leaves no headroom");
            assert!(
                default_max_connections(n + 1) as u64 >= cap,
                "{n}: not monotonic"
            );
        }
    }

    #[test]
    fn caps_total_and_per_address() {
        let config = LimitsConfig {
            max_connections_per_ip: 2,
            ..LimitsConfig::default()
        };
        let limits = Limits::new(&config, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.admit(Some(a)).unwrap();
        let s2 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(a)).err(), Some(Refused::PerIp));
        let s3 = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(Some(b)).err(), Some(Refused::Total));
        assert_eq!(limits.open(), 3);
        drop(s1);
        assert_eq!(limits.open(), 2);
        let s4 = limits.admit(Some(a)).unwrap();
        drop((s2, s3, s4));
        assert_eq!(limits.open(), 0);
        assert!(limits.per_ip.is_empty());
    }
}
