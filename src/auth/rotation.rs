//! Overlapping rotation, as the verifier sees it: a token regenerated with an overlap keeps
//! its previous secret until the overlap's deadline or — with `tokens.rotation_overlap_ends:
//! first_use`, the default — until its new secret is first used, whichever comes first.
//!
//! The retirement at first use acts here at once, in memory (the next request with the old
//! secret on this process is refused), and is handed to the control plane
//! ([`Rotation::take_retirements`]), which clears the previous secret in the token database;
//! every other replica then sees the record without it through its database follower. The
//! deadline needs no write to act: a previous secret past its deadline is never accepted; the
//! control plane clears those too, so the log says when each one died.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::config::OverlapEnds;
use crate::store::Snapshot;
use crate::token::Token;

/// Why a previous secret stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireReason {
    /// The new secret was used (`rotation_overlap_ends: first_use`).
    NewSecretUsed,
    /// The overlap's deadline passed.
    Deadline,
}

impl RetireReason {
    /// The word used in log lines (`new_secret_used`, `deadline`).
    pub fn as_str(self) -> &'static str {
        match self {
            RetireReason::NewSecretUsed => "new_secret_used",
            RetireReason::Deadline => "deadline",
        }
    }
}

/// A previous secret to clear from the token database.
#[derive(Debug, Clone)]
pub struct Retirement {
    /// The token's id.
    pub id: Arc<str>,
    /// The record's generation when it was retired (a newer record is left alone).
    pub generation: u64,
    /// Why.
    pub reason: RetireReason,
    /// When this process last accepted the previous secret, if it did.
    pub previous_last_used: Option<DateTime<Utc>>,
}

/// The verifier's rotation state: previous secrets retired here (by id, at a generation) and
/// when each previous secret was last accepted.
pub struct Rotation {
    ends: OverlapEnds,
    /// Previous secrets retired on this process, by token id: the generation of the record
    /// they were retired from. Entries go once the snapshot no longer has that previous
    /// secret ([`Rotation::prune`]).
    retired: DashMap<Arc<str>, u64, foldhash::quality::RandomState>,
    /// When each token's previous secret was last accepted here.
    previous_used: DashMap<Arc<str>, DateTime<Utc>, foldhash::quality::RandomState>,
    sender: mpsc::UnboundedSender<Retirement>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Retirement>>>,
}

impl Rotation {
    /// Rotation state ending overlaps as `ends` says.
    pub fn new(ends: OverlapEnds) -> Self {
        // Unbounded, yet bounded in practice: one message per token and generation at most
        // (the `retired` map dedupes), and a generation needs an admin write.
        let (sender, receiver) = mpsc::unbounded_channel();
        Rotation {
            ends,
            retired: DashMap::default(),
            previous_used: DashMap::default(),
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The retirements to write to the database; `Some` once (the control plane takes it).
    pub fn take_retirements(&self) -> Option<mpsc::UnboundedReceiver<Retirement>> {
        self.receiver.lock().ok()?.take()
    }

    /// True while `record`'s previous secret may still be accepted at `now`.
    pub fn previous_usable(&self, record: &Token, now: DateTime<Utc>) -> bool {
        record.live_previous(now).is_some()
            && self.retired.get(&*record.id).map(|g| *g) != Some(record.generation)
    }

    /// The previous secret of `record` was accepted at `now`.
    pub fn previous_used(&self, record: &Token, now: DateTime<Utc>) {
        self.previous_used.insert(record.id.clone(), now);
    }

    /// The current secret of `record` was accepted: with `first_use`, its previous secret
    /// (if any) dies now.
    pub fn current_used(&self, record: &Token) {
        if self.ends == OverlapEnds::FirstUse && record.previous.is_some() {
            self.retire(record, RetireReason::NewSecretUsed);
        }
    }

    /// Retires `record`'s previous secret on this process and queues its removal from the
    /// database (once per token and generation).
    pub fn retire(&self, record: &Token, reason: RetireReason) {
        if self.retired.get(&*record.id).map(|g| *g) == Some(record.generation) {
            return;
        }
        let fresh = self
            .retired
            .insert(record.id.clone(), record.generation)
            .is_none_or(|g| g != record.generation);
        if fresh {
            let _ = self.sender.send(Retirement {
                id: record.id.clone(),
                generation: record.generation,
                reason,
                previous_last_used: self.previous_used.get(&*record.id).map(|t| *t),
            });
        }
    }

    /// The previous secrets in `snapshot` whose deadline has passed at `now` and that are not
    /// yet retired here: retires them (they are already refused; this clears them from the
    /// database and logs their end).
    pub fn retire_past_deadline(&self, snapshot: &Snapshot, now: DateTime<Utc>) {
        for t in snapshot.iter() {
            if t.previous.as_ref().is_some_and(|p| now >= p.valid_until) {
                self.retire(t, RetireReason::Deadline);
            }
        }
    }

    /// Forgets what no longer matters: retirements of records the snapshot no longer holds
    /// with a previous secret at that generation, and last uses of previous secrets gone.
    pub fn prune(&self, snapshot: &Snapshot) {
        let has_previous = |id: &str| snapshot.by_id(id).filter(|t| t.previous.is_some());
        self.retired
            .retain(|id, g| has_previous(id).is_some_and(|t| t.generation == *g));
        self.previous_used
            .retain(|id, _| has_previous(id).is_some());
    }
}

/// How often previous secrets past their deadline are looked for (they are refused from the
/// deadline on regardless; this clears them from the database and logs their end).
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Control-plane loop: writes the retirements of `verifier` to the token database (retrying a
/// failed write at the next sweep), retires previous secrets past their deadline, and logs
/// each previous secret's end once (by the process whose write cleared it). Ends when `stop`
/// fires.
pub async fn run(
    verifier: Arc<super::Verifier>,
    store: Arc<crate::store::Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(mut retirements) = verifier.rotation.take_retirements() else {
        return;
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<Retirement> = Vec::new();
    loop {
        tokio::select! {
            Some(r) = retirements.recv() => pending.push(r),
            _ = sweep.tick() => {
                let snapshot = store.set.load();
                verifier.rotation.retire_past_deadline(&snapshot, Utc::now());
                verifier.rotation.prune(&snapshot);
            }
            _ = stop.changed() => return,
        }
        while let Ok(r) = retirements.try_recv() {
            pending.push(r);
        }
        let mut failed = Vec::new();
        for r in pending.drain(..) {
            match store.retire_previous(&r.id, r.generation).await {
                Ok(true) => {
                    let name = store.set.load().by_id(&r.id).map(|t| t.name.clone());
                    tracing::info!(
                        target: "audit",
                        action = "token.previous_retired",
                        token_id = &*r.id,
                        token_name = name.as_deref().unwrap_or(""),
                        reason = r.reason.as_str(),
                        previous_last_used_at = r.previous_last_used.map(|t| t.to_rfc3339()),
                        "previous secret retired: refused from now on"
                    );
                }
                // Already cleared (by another replica), or the token changed meanwhile.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(token_id = &*r.id, error = %e, "clearing a retired previous secret from the token database failed; retrying (it is refused here meanwhile)");
                    failed.push(r);
                }
            }
        }
        pending = failed;
    }
}
