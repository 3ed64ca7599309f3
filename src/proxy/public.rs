//! Public paths: whether a request without credentials may be forwarded anonymously (a
//! public rule matches its normalized path with enough access for its method, and its client
//! address's anonymous budget allows it). The address is the resolved client (behind a
//! trusted proxy, from `X-Forwarded-For`), so anonymous users behind a load balancer do not
//! share one budget.

use super::{Ctx, Proxy, Refusal};
use crate::metrics::METRICS;
use crate::token::Permission;

impl Proxy {
    /// Decides a request without credentials on the normalized `path`: a public rule must
    /// match it with enough access for the method (else 401 `credentials_missing`, as without
    /// public paths), and the client address's anonymous budget must allow it (else 429).
    pub(super) fn admit_anonymous(
        &self,
        ctx: &mut Ctx,
        required: Permission,
        path: &str,
    ) -> std::result::Result<(), Refusal> {
        let public = path != self.whoami_path
            && self
                .public
                .iter()
                .any(|p| p.access >= required && p.pattern.matches(path));
        if !public {
            return Err(Refusal::CredentialsMissing);
        }
        ctx.outcome = "public";
        if let Some(decision) = self.rate_limits.check_anonymous(ctx.client) {
            let allowed = decision.allowed;
            let retry = decision.retry_after_secs().unwrap_or(1);
            ctx.rate = Some(decision);
            if !allowed {
                METRICS.rate_limited.inc();
                return Err(Refusal::RateLimited(retry));
            }
        }
        Ok(())
    }
}
