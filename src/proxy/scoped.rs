//! Package scopes in the proxy: a token limited to `packages` is checked against the package
//! each request touches (`crate::scope::classify` under `upstream.layouts`), its listings are
//! filtered and its uploads are held until their body says which package they are.
//!
//! Nothing here runs for an unscoped token: `Scoped::No` is the whole cost (one branch per
//! hook). For a scoped token:
//!
//! - a listing (`packages.json`, `/simple/`, npm search…) is asked for in identity encoding
//!   and without conditional or range headers; a `200` loses its `Content-Length` and `ETag`,
//!   gains `Vary: Authorization`, and its body is collected (at most `listing_max_body`) and
//!   sent filtered at its end. A bigger one (by `Content-Length`), a compressed one, or one
//!   that is not its format is answered 502 before anything is sent; one that grows past the
//!   bound without a `Content-Length` ends the connection. Never an unfiltered body.
//! - an upload that names its package only in its body (`twine upload`, `cargo publish`) is
//!   held back, whole (at most `listing_max_body`), before any of it reaches the store; it
//!   goes on only when every package it names is allowed, else the client gets 403 and the
//!   store's connection is dropped with the body unsent.
//!
//! What all of them hold at once is bounded too ([`Budget`]: four times `listing_max_body`);
//! past it a request is answered 503 `scope_busy` (many slow uploads cannot take the memory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::Refusal;
use crate::scope::{self, Layouts, Listing, PackagePatterns, Target, Upload};
use crate::token::Token;

/// The bytes every collected listing and held upload may take together.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
}

impl Budget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            cap,
        })
    }
}

/// A body being collected, its bytes counted against the [`Budget`] until it is dropped.
#[derive(Debug)]
pub struct Held {
    buf: BytesMut,
    budget: Arc<Budget>,
}

impl Held {
    fn new(budget: &Arc<Budget>, capacity: usize) -> Held {
        Held {
            buf: BytesMut::with_capacity(capacity.min(1 << 20)),
            budget: budget.clone(),
        }
    }

    /// Appends `piece`: past `max` bytes `too_large`, past the shared budget `ScopeBusy`.
    fn push(&mut self, piece: &[u8], max: usize, too_large: Refusal) -> Result<(), Refusal> {
        if self.buf.len() + piece.len() > max {
            return Err(too_large);
        }
        let before = self.budget.used.fetch_add(piece.len(), Ordering::Relaxed);
        if before + piece.len() > self.budget.cap {
            self.budget.used.fetch_sub(piece.len(), Ordering::Relaxed);
            return Err(Refusal::ScopeBusy);
        }
        self.buf.extend_from_slice(piece);
        Ok(())
    }
}

impl Held {
    /// The body, its bytes given back to the budget (they go upstream now).
    fn take(&mut self) -> Bytes {
        let buf = std::mem::take(&mut self.buf);
        self.budget.used.fetch_sub(buf.len(), Ordering::Relaxed);
        buf.freeze()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.buf.len(), Ordering::Relaxed);
    }
}

/// A request's package-scope state.
#[derive(Debug, Default)]
pub enum Scoped {
    /// Unscoped token, or a request whose package was allowed as it stands.
    #[default]
    No,
    /// A listing whose response is still to come.
    Listing(Listing),
    /// A listing's `200` body being collected (its `Content-Type`, the body so far).
    Collecting(Listing, Option<String>, Held),
    /// An upload body held back until it is whole.
    Holding(Upload, Option<String>, Held),
}

/// The proxy's package-scope settings: `upstream.layouts`, `upstream.listing_max_body`, and
/// the budget every held body shares.
#[derive(Clone)]
pub struct Scopes {
    layouts: Layouts,
    /// `upstream.listing_max_body`.
    pub max_body: usize,
    /// Four times `max_body`.
    pub budget: Arc<Budget>,
}

impl Scopes {
    /// From the upstream configuration.
    pub fn new(layouts: Layouts, max_body: usize) -> Scopes {
        Scopes {
            layouts,
            max_body,
            budget: Budget::new(max_body.saturating_mul(4)),
        }
    }

    /// The artifact a read fetches, for the usage ledger (`None` at once without layouts).
    pub fn artifact(&self, method: &http::Method, path: &str) -> Option<scope::Artifact> {
        if self.layouts.is_empty() {
            return None;
        }
        scope::artifact(&self.layouts, method, path)
    }

    /// Decides a scoped token's request: allowed as it is, allowed with a filter or a held
    /// body, or refused.
    pub fn check(
        &self,
        token: &Token,
        method: &http::Method,
        path: &str,
        content_type: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<Scoped, Refusal> {
        check(self, token, method, path, content_type, content_length)
    }
}

fn check(
    scopes: &Scopes,
    token: &Token,
    method: &http::Method,
    path: &str,
    content_type: Option<&str>,
    content_length: Option<u64>,
) -> Result<Scoped, Refusal> {
    let (max_body, budget) = (scopes.max_body, &scopes.budget);
    let allowed = &token.packages;
    match scope::classify(&scopes.layouts, method, path) {
        Target::Package(eco, names) => {
            if names.iter().all(|n| allowed.allows_normal(eco, n)) {
                Ok(Scoped::No)
            } else {
                Err(Refusal::PackageNotAllowed)
            }
        }
        Target::Neutral => Ok(Scoped::No),
        Target::Listing(_, l) => Ok(Scoped::Listing(l)),
        Target::Upload(_, kind) => {
            if content_length.is_some_and(|n| n > max_body as u64) {
                return Err(Refusal::PackageUnknown);
            }
            Ok(Scoped::Holding(
                kind,
                content_type.map(str::to_owned),
                Held::new(budget, content_length.unwrap_or(0) as usize),
            ))
        }
        Target::Unknown => Err(Refusal::PackageUnknown),
    }
}

impl Scoped {
    /// A listing request (its upstream request asks for the whole identity body).
    pub fn is_listing(&self) -> bool {
        matches!(self, Scoped::Listing(_))
    }

    /// Takes the upstream's response head of a listing (see the module comment).
    /// A HEAD answer has its headers changed alike, and no body to collect.
    pub fn on_response(
        &mut self,
        resp: &mut ResponseHeader,
        head_only: bool,
        max_body: usize,
        budget: &Arc<Budget>,
    ) -> Result<(), Refusal> {
        let Scoped::Listing(listing) = *self else {
            return Ok(());
        };
        if resp.status.is_informational() {
            return Ok(());
        }
        *self = Scoped::No;
        // Whatever the status, one token's view must not be served to another from a cache.
        let _ = resp.append_header(VARY, HeaderValue::from_static("Authorization"));
        match resp.status.as_u16() {
            200 => {}
            // Another success (206 and the like) would carry a body that cannot be filtered.
            201..=299 if resp.status != http::StatusCode::NO_CONTENT => {
                return Err(Refusal::ListingUnfilterable)
            }
            _ => return Ok(()),
        }
        if resp.headers.contains_key(CONTENT_ENCODING) {
            return Err(Refusal::ListingUnfilterable);
        }
        let length = resp
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if length.is_some_and(|n| n > max_body as u64) {
            return Err(Refusal::ListingTooLarge);
        }
        let content_type = resp
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ETAG);
        resp.remove_header(&http::header::LAST_MODIFIED);
        if head_only {
            return Ok(());
        }
        let capacity = length.map_or(8 * 1024, |n| n as usize);
        *self = Scoped::Collecting(listing, content_type, Held::new(budget, capacity));
        Ok(())
    }

    /// Takes a piece of a listing's body: nothing goes out until the end, where the filtered
    /// body does.
    pub fn on_body(
        &mut self,
        body: &mut Option<Bytes>,
        end: bool,
        allowed: &PackagePatterns,
        max_body: usize,
    ) -> Result<(), Refusal> {
        let Scoped::Collecting(listing, content_type, collected) = self else {
            return Ok(());
        };
        if let Some(piece) = body.take() {
            if let Err(r) = collected.push(&piece, max_body, Refusal::ListingTooLarge) {
                *self = Scoped::No;
                return Err(r);
            }
        }
        if end {
            let out =
                scope::filter::filter(*listing, content_type.as_deref(), &collected.buf, allowed);
            *self = Scoped::No;
            *body = Some(Bytes::from(out.map_err(|_| Refusal::ListingUnfilterable)?));
        }
        Ok(())
    }

    /// Takes a piece of an upload's body: held back (an empty piece goes upstream) until the
    /// end, where the whole body goes on if every package it names is allowed.
    pub fn on_request_body(
        &mut self,
        body: &mut Option<Bytes>,
        end: bool,
        allowed: &PackagePatterns,
        max_body: usize,
    ) -> Result<(), Refusal> {
        let Scoped::Holding(kind, content_type, held) = self else {
            return Ok(());
        };
        if let Some(piece) = body.take() {
            if let Err(r) = held.push(&piece, max_body, Refusal::PackageUnknown) {
                *self = Scoped::No;
                return Err(r);
            }
        }
        if !end {
            *body = Some(Bytes::new());
            return Ok(());
        }
        let whole = held.take();
        let verdict = match scope::upload::names(*kind, content_type.as_deref(), &whole) {
            None => Err(Refusal::PackageUnknown),
            Some((eco, names)) if names.iter().all(|n| allowed.allows_normal(eco, n)) => Ok(()),
            Some(_) => Err(Refusal::PackageNotAllowed),
        };
        *self = Scoped::No;
        verdict?;
        *body = Some(whole);
        Ok(())
    }
}

/// The error a hook returns to stop a request whose refusal is in the context.
pub fn stop(r: Refusal) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(r.status()), r.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bodies_share_one_budget_and_give_it_back() {
        let budget = Budget::new(100);
        let mut a = Held::new(&budget, 0);
        let mut b = Held::new(&budget, 0);
        a.push(&[0; 60], 80, Refusal::ListingTooLarge).unwrap();
        // Past its own bound first, then past the shared one.
        assert_eq!(
            a.push(&[0; 30], 80, Refusal::ListingTooLarge),
            Err(Refusal::ListingTooLarge)
        );
        assert_eq!(
            b.push(&[0; 50], 80, Refusal::ListingTooLarge),
            Err(Refusal::ScopeBusy)
        );
        b.push(&[0; 40], 80, Refusal::ListingTooLarge).unwrap();
        assert_eq!(budget.used.load(Ordering::Relaxed), 100);
        drop(a);
        assert_eq!(budget.used.load(Ordering::Relaxed), 40);
        b.push(&[0; 40], 80, Refusal::ListingTooLarge).unwrap();
        drop(b);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }
}
