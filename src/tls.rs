//! The HTTPS listener's certificate: loaded from PEM files, served to every handshake through a
//! rustls certificate resolver, and swapped when the files change (a Kubernetes Secret update,
//! a renewal) without a restart. A bad new pair is refused and the old one keeps serving.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use sha2::{Digest, Sha256};

/// The certificate currently served, and where it comes from.
pub struct CertStore {
    cert_file: String,
    key_file: String,
    current: ArcSwap<CertifiedKey>,
    digest: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

fn read(cert_file: &str, key_file: &str) -> Result<(CertifiedKey, [u8; 32]), String> {
    let cert_pem = std::fs::read(cert_file).map_err(|e| format!("{cert_file}: {e}"))?;
    let key_pem = std::fs::read(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let digest: [u8; 32] = Sha256::new()
        .chain_update(&cert_pem)
        .chain_update(&key_pem)
        .finalize()
        .into();
    let (certs, key) = match pingora::tls::load_certs_and_key_files(cert_file, key_file) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return Err(format!(
                "{cert_file} / {key_file}: no certificate or key found"
            ))
        }
        Err(e) => return Err(format!("{cert_file} / {key_file}: {e}")),
    };
    if certs.is_empty() {
        return Err(format!("{cert_file}: no certificate found"));
    }
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider installed".to_string())?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_file}: unusable private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("{cert_file} does not match {key_file}: {e}"))?;
    Ok((certified, digest))
}

impl CertStore {
    /// Loads the pair, refusing unreadable, malformed or mismatched files.
    pub fn load(cert_file: &str, key_file: &str) -> Result<Arc<Self>, String> {
        let (certified, digest) = read(cert_file, key_file)?;
        Ok(Arc::new(CertStore {
            cert_file: cert_file.to_string(),
            key_file: key_file.to_string(),
            current: ArcSwap::from_pointee(certified),
            digest: Mutex::new(digest),
        }))
    }

    /// Re-reads the files; swaps the certificate if they changed and are valid.
    /// Returns whether a new certificate is now served.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let (certified, digest) = read(&self.cert_file, &self.key_file)?;
        let mut current = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        if *current == digest {
            return Ok(false);
        }
        self.current.store(Arc::new(certified));
        *current = digest;
        Ok(true)
    }

    /// Polls the files every `every` until `stop` fires, logging changes and refusals.
    pub async fn watch(
        self: Arc<Self>,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut last_error = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    last_error = None;
                    tracing::info!(cert_file = %self.cert_file, "TLS certificate reloaded");
                }
                Ok(false) => last_error = None,
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::error!(problem = %e, "new TLS certificate refused; the previous one keeps serving");
                    }
                    last_error = Some(e);
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Longest TLS handshake on the admin listener.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An axum listener that completes TLS handshakes concurrently (a slow client cannot hold up
/// the others) and yields only established TLS streams. Serves the [`CertStore`]'s current
/// certificate, TLS 1.2 and 1.3 only.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        pingora::tls::ServerTlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (on the current tokio runtime).
    pub fn new(listener: tokio::net::TcpListener, certs: Arc<CertStore>) -> std::io::Result<Self> {
        pingora::tls::install_default_crypto_provider();
        let config = pingora::tls::ServerConfig::builder_with_protocol_versions(&[
            &pingora::tls::version::TLS12,
            &pingora::tls::version::TLS13,
        ])
        .with_no_client_auth()
        .with_cert_resolver(certs);
        let acceptor = pingora::tls::TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
                        Err(_) => tracing::debug!("admin TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = pingora::tls::ServerTlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
