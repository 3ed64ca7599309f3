//! The pingora `ProxyHttp` implementation: orchestration only. Each request goes
//! credentials → verification → path normalization → authorization → upstream, and every
//! refusal is decided (and written) in `request_filter`, before anything reaches the upstream.
//! A request without credentials on a public path (`public:`) skips verification: it is
//! normalized, matched against the public rules, limited per client address and forwarded
//! without an identity.
//!
//! The pieces live beside it: header hygiene for the upstream (`headers`), per-token rate
//! limits and their response fields (`limits`, `rate_headers`), the proxy's own answers
//! (`responses`, `whoami`) and the cargo `config.json` rewrite (`cargo`). The upstream's
//! addresses, and when they are resolved again, are `crate::upstream`'s.
//!
//! Over 500 lines: it is the one `ProxyHttp` implementation, whose hooks share `Ctx` and read
//! best in order in one place; everything they call lives in the modules above.

mod cargo;
mod failure;
mod headers;
mod limits;
mod oidc;
mod public;
mod quota;
pub mod rate_headers;
mod responses;
mod scoped;
mod shared_limits;
mod whoami;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use http::header::{HeaderValue, AUTHORIZATION};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

pub use limits::TokenLimits;
pub use responses::{refusal_body, Refusal};

use cargo::ConfigJson;

use crate::auth::policy::allows;
use crate::auth::{
    normalize_path, parse_authorization, required_permission, Caller, CredentialError, Verifier,
};
use crate::config::{Config, PublicPath};
use crate::lifecycle::{Health, InFlight};
use crate::metrics::{method_label, METRICS};
use crate::net::TrustedProxies;
use crate::ratelimit::Decision;
use crate::store::Store;
use crate::token::Token;
use crate::upstream::UpstreamPeers;

/// Per-request state shared across the filters.
pub struct Ctx {
    started: Instant,
    /// The client's address: the TCP peer, or behind a trusted proxy what `X-Forwarded-For`
    /// says (set first thing in `request_filter`).
    client: Option<std::net::IpAddr>,
    token: Option<Arc<Token>>,
    /// The token's previous secret was presented (a regeneration's overlap).
    previous_secret: bool,
    outcome: &'static str,
    path: Option<String>,
    class: &'static str,
    rate: Option<Decision>,
    /// The quota refusal sent in place of a response that would go over the byte quota.
    quota_body: Option<Bytes>,
    upstream_sent: Option<Instant>,
    /// A cargo `config.json` request, and its body while it is rewritten.
    cargo: ConfigJson,
    /// The resolution to wait for before the one retry after a failed connection.
    resolve_wait: Option<u64>,
    connect_retried: bool,
    /// The status a failure was answered with (0: the client was gone), for its log line.
    failure_status: u16,
    /// Package scopes: a listing to filter or an upload to hold (`scoped`), and the refusal
    /// a scope hook stopped the request with.
    scoped: scoped::Scoped,
    scoped_refusal: Option<Refusal>,
    _in_flight: InFlight,
}

impl Ctx {
    /// Rate-limit header fields for the response, if the token is limited.
    fn rate_headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        match &self.rate {
            Some(d) => rate_headers::render(d, unix_now()),
            None => Vec::new(),
        }
    }
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The proxy service. Cloned once per worker (`app::start_proxy`): every field is shared
/// state behind an `Arc` or a small setting.
#[derive(Clone)]
pub struct Proxy {
    store: Arc<Store>,
    rate_limits: Arc<TokenLimits>,
    /// Rate limits shared on Redis (`rate_limit.backend`); `None`: in process only.
    shared: Option<Arc<crate::shared::SharedLimits>>,
    /// Quota counters (on the shared backend, or in memory).
    quotas: Arc<crate::shared::Quotas>,
    health: Arc<Health>,
    verifier: Arc<Verifier>,
    upstream: Arc<UpstreamPeers>,
    challenge: HeaderValue,
    whoami_path: String,
    token_usernames: Vec<String>,
    identity_headers: bool,
    host_value: HeaderValue,
    path_prefix: String,
    cargo_config: Option<String>,
    /// Paths served without credentials (empty: none, and a missing token is refused at once).
    public: Box<[PublicPath]>,
    trusted_proxies: TrustedProxies,
    /// The usage ledger, when there is one: every request made with a token is counted.
    usage: Option<Arc<crate::usage::Ledger>>,
    /// Trusted publishing, when `oidc.enabled`: its exchange path is answered here.
    oidc: Option<Arc<crate::oidc::Oidc>>,
    /// `upstream.layouts` and `upstream.listing_max_body` (package scopes).
    scopes: scoped::Scopes,
}

impl Proxy {
    /// Builds the proxy from a validated configuration.
    pub fn new(
        config: &Config,
        upstream: Arc<UpstreamPeers>,
        store: Arc<Store>,
        verifier: Arc<Verifier>,
        health: Arc<Health>,
    ) -> Self {
        let up = &config.upstream;
        Proxy {
            store,
            rate_limits: Arc::new(TokenLimits::new(config)),
            shared: None,
            quotas: crate::shared::Quotas::new(None),
            health,
            verifier,
            upstream,
            challenge: HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"tollgate\"")),
            whoami_path: config.whoami_path.clone(),
            token_usernames: config.tokens.token_usernames.clone(),
            identity_headers: config.tokens.identity_headers,
            host_value: HeaderValue::from_str(&up.host_header)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            path_prefix: up.path_prefix.clone(),
            cargo_config: up.cargo_index.as_deref().map(cargo::config_json_path),
            public: config.public.clone().into_boxed_slice(),
            trusted_proxies: config.trusted_proxies.clone(),
            usage: None,
            oidc: None,
            scopes: scoped::Scopes::new(up.layouts.clone(), up.listing_max_body),
        }
    }

    /// Shares the per-token rate limits on `shared` (`rate_limit.backend`).
    pub fn with_shared(mut self, shared: Arc<crate::shared::SharedLimits>) -> Self {
        let backend: Arc<dyn crate::shared::UsageStore> = shared.backend().clone();
        self.quotas = crate::shared::Quotas::new(Some(backend));
        self.shared = Some(shared);
        self
    }

    /// Keeps quota counts in `store` (the token database) when there is no shared backend.
    pub fn with_quota_store(mut self, store: Arc<dyn crate::shared::UsageStore>) -> Self {
        if self.shared.is_none() {
            self.quotas = crate::shared::Quotas::new(Some(store));
        }
        self
    }

    /// The quota counters (the application flushes them).
    pub fn quotas(&self) -> Arc<crate::shared::Quotas> {
        self.quotas.clone()
    }

    /// Counts every request made with a token in `ledger`.
    pub fn with_usage(mut self, ledger: Option<Arc<crate::usage::Ledger>>) -> Self {
        self.usage = ledger;
        self
    }

    /// Answers trusted-publishing exchanges at `oidc`'s exchange path.
    pub fn with_oidc(mut self, oidc: Arc<crate::oidc::Oidc>) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// The per-token rate-limit state this proxy applies (the application maintains it).
    pub fn rate_limits(&self) -> Arc<TokenLimits> {
        self.rate_limits.clone()
    }

    /// Answers the request with a refusal. Boxed, like every cold path awaited in
    /// `request_filter`: async-trait allocates and moves that future on every request, so it
    /// must stay small.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, r: Refusal) -> Result<bool> {
        Box::pin(self.write_refusal(session, ctx, r)).await
    }

    async fn write_refusal(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        r: Refusal,
    ) -> Result<bool> {
        ctx.outcome = r.code();
        ctx.class = "refused";
        if session
            .req_header()
            .headers
            .contains_key(http::header::CONTENT_LENGTH)
            || session
                .req_header()
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            // An unread request body would be taken as the next request: close instead.
            session.set_keepalive(None);
        }
        responses::write_refusal(session, r, &self.challenge, ctx.rate_headers()).await?;
        Ok(true)
    }

    /// Header hygiene for everything sent upstream (see [`headers::rewrite`]).
    fn prepare_upstream_request(&self, session: &Session, req: &mut RequestHeader, ctx: &Ctx) {
        let forwarding = headers::Forwarding {
            identity: ctx.token.as_deref().filter(|_| self.identity_headers),
            host: &self.host_value,
            client: ctx.client,
            peer: peer_ip(session),
            https: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        };
        headers::prepare(req, &forwarding);
    }
}

/// The TCP peer's address (the client, unless it is a trusted proxy).
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// No downstream modules: pingora adds a disabled response-compression module by default,
    /// which still builds its context and runs its filters on every request and body chunk
    /// (~1 000 instructions a request, callgrind). Tollgate passes the upstream's encoding on
    /// and never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            client: None,
            token: None,
            previous_secret: false,
            outcome: "ok",
            path: None,
            class: "proxied",
            rate: None,
            quota_body: None,
            upstream_sent: None,
            cargo: ConfigJson::No,
            resolve_wait: None,
            connect_retried: false,
            failure_status: 0,
            scoped: scoped::Scoped::No,
            scoped_refusal: None,
            _in_flight: InFlight::new(&self.health),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // With no trusted proxy the peer, without looking at any header.
        ctx.client = if self.trusted_proxies.is_empty() {
            peer_ip(session)
        } else {
            let xff = session
                .req_header()
                .headers
                .get_all(&headers::X_FORWARDED_FOR);
            self.trusted_proxies
                .client(peer_ip(session), || xff.iter().map(HeaderValue::as_bytes))
        };
        if !self.store.set.is_ready() {
            return self.refuse(session, ctx, Refusal::NotReady).await;
        }
        headers::fix_framing(session.req_header_mut());
        if let Some(oidc) = &self.oidc {
            // Before credentials: a job token is not a Tollgate token. The exact path only.
            if session.req_header().uri.path() == oidc.exchange_path() {
                let oidc = oidc.clone();
                return Box::pin(self.oidc_exchange(session, ctx, &oidc)).await;
            }
        }
        let headers = &session.req_header().headers;
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let first = values.next().map(|v| v.as_bytes());
        if values.next().is_some() {
            return self
                .refuse(
                    session,
                    ctx,
                    Refusal::CredentialsMalformed("more than one Authorization header"),
                )
                .await;
        }
        let presented = match parse_authorization(first, &self.token_usernames) {
            Ok(p) => Some(p),
            // No credentials at all: perhaps a public path (decided once the path is normal).
            Err(CredentialError::Missing) if !self.public.is_empty() => None,
            Err(e) => return self.refuse(session, ctx, e.into()).await,
        };
        let token = match presented {
            Some(presented) => {
                let snapshot = self.store.set.load();
                let now = Utc::now();
                let caller = Caller::proxy(ctx.client);
                let token = match self
                    .verifier
                    .authenticate_detailed(&presented, &snapshot, now, caller)
                    .await
                {
                    Ok(a) => {
                        ctx.previous_secret = a.previous_secret;
                        a.token
                    }
                    Err(e) => return self.refuse(session, ctx, e.into()).await,
                };
                drop(snapshot);
                let agent = session.req_header().headers.get(http::header::USER_AGENT);
                self.store
                    .touch(&token, now, caller.addr, agent.map(HeaderValue::as_bytes));
                ctx.token = Some(token.clone());
                Some(token)
            }
            None => None,
        };

        let raw_path = session.req_header().uri.path();
        // Borrowed from the request when it is already normal (no copy).
        let path = match normalize_path(raw_path) {
            Ok(p) => p,
            Err(e) => return self.refuse(session, ctx, Refusal::BadPath(e)).await,
        };
        let required = required_permission(&session.req_header().method);
        match &token {
            Some(token) => {
                if path == self.whoami_path {
                    return Box::pin(self.whoami(session, ctx, token)).await;
                }
                let decision = match &self.shared {
                    None => self.rate_limits.check(token),
                    // Boxed: the shared path awaits, and must not grow every request's future.
                    Some(shared) => {
                        match Box::pin(shared_limits::check(shared, &self.rate_limits, token)).await
                        {
                            Ok(d) => d,
                            Err(r) => {
                                ctx.path = Some(path.into_owned());
                                return self.refuse(session, ctx, r).await;
                            }
                        }
                    }
                };
                if let Some(decision) = decision {
                    let allowed = decision.allowed;
                    let retry = decision.retry_after_secs().unwrap_or(1);
                    ctx.rate = Some(decision);
                    if !allowed {
                        METRICS.rate_limited.inc();
                        ctx.path = Some(path.into_owned());
                        return self.refuse(session, ctx, Refusal::RateLimited(retry)).await;
                    }
                }
                if !allows(token, required, &path) {
                    ctx.path = Some(path.into_owned());
                    return self.refuse(session, ctx, Refusal::Forbidden).await;
                }
                if !token.packages.is_empty() {
                    let req = session.req_header();
                    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
                    let decided = self.scopes.check(
                        token,
                        &req.method,
                        &path,
                        header(http::header::CONTENT_TYPE),
                        header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
                    );
                    match decided {
                        Ok(s) => ctx.scoped = s,
                        Err(r) => {
                            ctx.path = Some(path.into_owned());
                            return self.refuse(session, ctx, r).await;
                        }
                    }
                }
                if token.quota.is_some() {
                    // Boxed like every cold path: most tokens have no quota.
                    if let Err(r) = Box::pin(quota::admit(&self.quotas, token)).await {
                        ctx.path = Some(path.into_owned());
                        return self.refuse(session, ctx, r).await;
                    }
                }
            }
            None => {
                if let Err(r) = self.admit_anonymous(ctx, required, &path) {
                    ctx.path = Some(path.into_owned());
                    return self.refuse(session, ctx, r).await;
                }
            }
        }

        // Forward exactly what was checked. An unchanged target needs no `ctx.path`: the
        // audit line reads the request's own path then.
        let uri = &session.req_header().uri;
        let is_cargo_config = self.cargo_config.as_deref() == Some(&*path)
            && matches!(
                session.req_header().method,
                http::Method::GET | http::Method::HEAD
            );
        if matches!(path, Cow::Owned(_)) || !self.path_prefix.is_empty() || uri.scheme().is_some() {
            let path = path.into_owned();
            let mut target = String::with_capacity(self.path_prefix.len() + path.len() + 32);
            target.push_str(&self.path_prefix);
            target.push_str(&path);
            if let Some(q) = uri.query() {
                target.push('?');
                target.push_str(q);
            }
            match http::Uri::try_from(target) {
                Ok(u) => session.req_header_mut().set_uri(u),
                Err(_) => {
                    return self
                        .refuse(
                            session,
                            ctx,
                            Refusal::BadPath(crate::auth::PathError::BadEncoding),
                        )
                        .await
                }
            }
            ctx.path = Some(path);
        }
        if is_cargo_config {
            ctx.class = "cargo_config";
            ctx.cargo = ConfigJson::Requested;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if let Some(seen) = ctx.resolve_wait.take() {
            // The retry after a failed connection: on the addresses found since.
            Box::pin(self.upstream.wait_resolved(seen)).await;
        }
        Ok(Box::new(self.upstream.peer()))
    }

    /// A connection to the upstream failed (nothing was sent): the name may point elsewhere
    /// now. Asks for a resolution (rate-limited) and retries once, on the addresses it finds
    /// (and on the next address in turn, when the name has several).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Only a name can lead elsewhere on a second try; an IP literal fails as before.
        if !ctx.connect_retried && crate::upstream::is_connect_failure(&e) {
            if let Some(wait) = self.upstream.connect_failed() {
                ctx.connect_retried = true;
                ctx.resolve_wait = Some(wait);
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.prepare_upstream_request(session, req, ctx);
        if ctx.cargo.is_requested() || ctx.scoped.is_listing() {
            // The whole file in identity encoding: it is rewritten on its way back.
            cargo::prepare_request(req);
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.cargo.is_requested() {
            let head_only = session.req_header().method == http::Method::HEAD;
            ctx.cargo.on_response(resp, head_only)?;
        }
        if ctx.scoped.is_listing() {
            let head_only = session.req_header().method == http::Method::HEAD;
            if let Err(r) =
                ctx.scoped
                    .on_response(resp, head_only, self.scopes.max_body, &self.scopes.budget)
            {
                ctx.scoped_refusal = Some(r);
                return Err(scoped::stop(r));
            }
        }
        if let Some(sent) = ctx.upstream_sent.take() {
            METRICS
                .upstream_duration
                .observe(sent.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(token) = ctx.token.as_ref().filter(|t| t.quota.is_some()) {
            let head_only = session.req_header().method == http::Method::HEAD;
            ctx.quota_body = quota::check_response(&self.quotas, token, resp, head_only)?;
            if ctx.quota_body.is_some() {
                ctx.outcome = Refusal::QuotaExceeded(0).code();
                ctx.class = "refused";
            }
        }
        if let Some(d) = &ctx.rate {
            rate_headers::apply(resp, d, unix_now())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        ctx.cargo.on_body(body, end_of_stream)?;
        if let (scoped::Scoped::Collecting(..), Some(token)) = (&ctx.scoped, &ctx.token) {
            let token = token.clone();
            let max = self.scopes.max_body;
            if let Err(r) = ctx
                .scoped
                .on_body(body, end_of_stream, &token.packages, max)
            {
                ctx.scoped_refusal = Some(r);
                return Err(scoped::stop(r));
            }
        }
        if ctx.quota_body.is_some() || ctx.token.as_ref().is_some_and(|t| t.quota.is_some()) {
            quota::on_body(
                &self.quotas,
                ctx.token.as_ref(),
                &mut ctx.quota_body,
                body,
                end_of_stream,
            );
        }
        Ok(None)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (scoped::Scoped::Holding(..), Some(token)) = (&ctx.scoped, &ctx.token) {
            let token = token.clone();
            let max = self.scopes.max_body;
            if let Err(r) = ctx
                .scoped
                .on_request_body(body, end_of_stream, &token.packages, max)
            {
                ctx.scoped_refusal = Some(r);
                return Err(scoped::stop(r));
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A scope hook's own refusal (a listing it cannot filter, an upload it refuses).
        let refusal = ctx.scoped_refusal.or_else(|| failure::refusal_for(e));
        if let Some(kind) = failure::upstream_kind(e) {
            METRICS.upstream_errors.with_label_values(&[kind]).inc();
        }
        let code = match refusal {
            Some(r) => {
                ctx.outcome = r.code();
                if session.response_written().is_none() {
                    let headers = ctx.rate_headers();
                    if let Err(err) =
                        responses::write_refusal(session, r, &self.challenge, headers).await
                    {
                        tracing::debug!(error = %err, "could not write the error response");
                    }
                }
                r.status()
            }
            None => {
                ctx.outcome = "client_error";
                METRICS.client_aborts.inc();
                0
            }
        };
        ctx.failure_status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, session: &Session, ctx: &Ctx, e: &Error) -> bool {
        failure::log_final(session, e, ctx.failure_status);
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        session: &Session,
        _ctx: &Ctx,
        e: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        failure::log_retry(session, e);
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let method = &session.req_header().method;
        let elapsed = ctx.started.elapsed();
        METRICS.count_request(ctx.outcome, method_label(method));
        METRICS.observe_request(ctx.class, elapsed.as_secs_f64());
        let (token_id, token_name) = match &ctx.token {
            Some(t) => (&*t.id, &*t.name),
            None => ("", ""),
        };
        let path = ctx
            .path
            .as_deref()
            .unwrap_or_else(|| session.req_header().uri.path());
        if let (Some(ledger), Some(t)) = (&self.usage, &ctx.token) {
            let sent = session.body_bytes_sent() as u64;
            // A download the layouts name the package of is counted under (ecosystem,
            // package, version); listings, uploads and other paths under the path.
            match self.scopes.artifact(method, path) {
                Some(a) => ledger.record_package(
                    &t.id,
                    a.ecosystem,
                    &a.package,
                    a.version.as_deref(),
                    sent,
                    status,
                    ctx.client,
                    Utc::now(),
                ),
                None => ledger.record(&t.id, path, sent, status, ctx.client, Utc::now()),
            }
        }
        crate::logging::audit::write(&crate::logging::audit::Record {
            token_id,
            token_name,
            method: method.as_str(),
            path,
            status,
            outcome: ctx.outcome,
            // Set by `request_filter`; a request refused before it (a bad head) by the peer.
            client: ctx.client.or_else(|| peer_ip(session)),
            duration: elapsed,
            previous_secret: ctx.previous_secret,
        });
    }
}
