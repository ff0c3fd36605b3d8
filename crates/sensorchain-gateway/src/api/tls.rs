//! TLS for the HTTP API (rustls with the `ring` provider, which also builds
//! for the Raspberry Pi targets) and the rule of what may be exposed:
//! `[listen] tls_cert` / `tls_key` in `gateway.toml` serve the API over
//! HTTPS; a non-loopback `listen.api` without TLS is refused at start unless
//! `[listen] allow_plaintext = true` (docs/API.md, "TLS").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How the API is exposed: `[listen] tls_cert`, `tls_key`,
/// `allow_plaintext` (and the older `api.allow_non_loopback`, which means
/// `allow_plaintext`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTls {
    /// The certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address anyway.
    pub allow_plaintext: bool,
}

impl ApiTls {
    /// TLS from these two PEM files.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ApiTls {
            cert: Some(cert.into()),
            key: Some(key.into()),
            allow_plaintext: false,
        }
    }

    /// True if a certificate and key are configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }

    /// Loads the certificate and key into an acceptor (`None` without TLS).
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => load_acceptor(c, k).map(Some),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "listen.tls_cert and listen.tls_key go together: give both (PEM files) or neither"
            ),
        }
    }
}

/// A TLS acceptor of the certificate chain `cert` and key `key` (PEM),
/// TLS 1.2 and 1.3, ALPN `http/1.1`.
pub fn load_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read listen.tls_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listen.tls_cert {} is not PEM certificates", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("listen.tls_cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("listen.tls_key {} holds no PEM private key", key.display()))?;
    // ring rather than aws-lc-rs: it cross-builds for the Pi targets
    // (aarch64, armv7) without cmake or a C toolchain of the target; rustls
    // deprecates it only for lacking post-quantum key exchange
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("listen.tls_cert and listen.tls_key do not make a usable certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The exposure rule: a non-loopback `addr` needs TLS, or `allow_plaintext`
/// (then a warning says the API, its logins and answers travel in clear).
pub fn check_exposure(addr: SocketAddr, tls: &ApiTls, legacy_allow: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || tls.enabled() {
        return Ok(());
    }
    if !(tls.allow_plaintext || legacy_allow) {
        anyhow::bail!(
            "listen.api = \"{addr}\" is not a loopback address and the API has no TLS: its session \
             tokens and patients' readings would cross the network in clear. Set listen.tls_cert \
             and listen.tls_key (PEM files), or keep the API on 127.0.0.1, or set \
             allow_plaintext = true in [listen] (listen.allow_plaintext) to serve it in clear anyway"
        );
    }
    tracing::warn!(
        addr = %addr,
        "the HTTP API listens on a non-loopback address WITHOUT TLS (listen.allow_plaintext): \
         logins, session tokens and readings cross the network in clear"
    );
    Ok(())
}
