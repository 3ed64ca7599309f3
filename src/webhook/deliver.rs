//! One delivery: sign, POST with a timeout, retry with exponential backoff.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Hook;
use crate::config::WebhookEvent;
use crate::metrics::METRICS;

/// Deliveries running at once (each may be waiting between retries).
pub(super) const MAX_IN_FLIGHT: usize = 16;
/// Attempts per delivery, the first included.
const ATTEMPTS: u32 = 8;
/// Wait before the first retry; doubled after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Whole-request timeout of one attempt (connect included).
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `sha256=<hex of HMAC-SHA256(secret, body)>`: the `X-Tollgate-Signature-256` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The HTTP client of every delivery: timeouts, no redirects (a 3xx is a failed attempt).
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

fn delivery_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// POSTs `body` to `hook` until a 2xx answer or [`ATTEMPTS`] attempts; the same delivery id
/// on every attempt, so the receiver can drop repeats. True when delivered.
pub(super) async fn deliver(
    client: &reqwest::Client,
    hook: &Hook,
    kind: WebhookEvent,
    body: bytes::Bytes,
) -> bool {
    let id = delivery_id();
    let sig = signature(hook.secret.expose().as_bytes(), &body);
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let result = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-tollgate-event", kind.as_str())
            .header("x-tollgate-delivery", &id)
            .header("x-tollgate-signature-256", &sig)
            .body(body.clone())
            .send()
            .await;
        let why = match result {
            Ok(r) if r.status().is_success() => {
                METRICS
                    .webhook_deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                tracing::info!(event = kind.as_str(), url = %hook.shown, delivery = %id, attempt, "webhook delivered");
                return true;
            }
            Ok(r) => format!("answered {}", r.status().as_u16()),
            // Without the URL: reqwest's errors name it, and a URL may carry a token.
            Err(e) => e.without_url().to_string(),
        };
        if attempt == ATTEMPTS {
            METRICS
                .webhook_deliveries
                .with_label_values(&["failed"])
                .inc();
            tracing::warn!(event = kind.as_str(), url = %hook.shown, delivery = %id, attempts = attempt, error = %why, "webhook delivery failed; giving up");
            return false;
        }
        METRICS
            .webhook_deliveries
            .with_label_values(&["retry"])
            .inc();
        tracing::info!(event = kind.as_str(), url = %hook.shown, delivery = %id, attempt, error = %why, retry_in = ?wait, "webhook delivery failed; will retry");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_documented_example() {
        // docs.github.com, "Validating webhook deliveries": secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
