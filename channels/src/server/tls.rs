//! TLS termination (the `tls` feature), for deployments without a proxy in front: rustls with
//! a certificate chain and key from PEM files, reloadable while serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong loading a certificate or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and private key for [`Server::tls`](crate::Server::tls), read from PEM
/// files. Cheap to clone: clones share the files and the current configuration, so a
/// [`reload`](Self::reload) through any clone is seen by the server for the next connections
/// (connections already open keep the certificate they were opened with). With
/// [`Server::shutdown_on_signals`](crate::Server::shutdown_on_signals), SIGHUP reloads too.
///
/// ```no_run
/// # fn run() -> Result<(), channels::server::TlsError> {
/// let tls = channels::server::TlsConfig::from_pem_files("/etc/chat/fullchain.pem", "/etc/chat/privkey.pem")?;
/// // ... Server::new(app).tls(tls.clone()) ...; after the certificate is renewed:
/// tls.reload()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("cert", &self.inner.cert).field("key", &self.inner.key).finish()
    }
}

impl TlsConfig {
    /// Reads the certificate chain (leaf first) from `cert` and the private key (PKCS#8, PKCS#1
    /// or SEC1) from `key`.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key that does not match.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.as_ref().to_owned(), key.as_ref().to_owned());
        let current = RwLock::new(Arc::new(load(&cert, &key)?));
        Ok(TlsConfig { inner: Arc::new(Inner { cert, key, current }) })
    }

    /// Reads the files again; new connections use what they hold from now on. On an error the
    /// previous certificate stays in use.
    ///
    /// # Errors
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load(&self.inner.cert, &self.inner.key)?);
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn load(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let pem_error = |path: &Path, reason: String| TlsError::Pem { path: path.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|err| pem_error(cert, err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(cert, err.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no certificate in the file".to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|err| pem_error(key, err.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // WebSockets run over HTTP/1.1 (RFC 6455); no HTTP/2 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
