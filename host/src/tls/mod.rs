//! TLS: server configurations for the node's listeners (`server`), reloaded when the
//! certificate files change or on SIGHUP, connections handshaken off the accept loop
//! (`accept`), and the client side (kvclient, kvbench, and nodes dialing each other).
//!
//! A reload that fails (a half-written file, a key that does not match its certificate) keeps
//! the configuration in use and says why in the log; connections already open keep the
//! certificate they were accepted with.

mod accept;
mod server;

pub use accept::{incoming, TlsListener};
pub use server::{watch, Listener, PeerCerts, PeerRefused, ServerTls};

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Why TLS files cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--{flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--{flag} {path}: no {what} in the file")]
    Empty {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("--{flag} {path}: {source}")]
    Verifier {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("--tls-cert/--tls-key: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every TLS configuration here uses (ring; no OpenSSL, no aws-lc).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first).
pub fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            flag,
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            flag,
            path: path.to_path_buf(),
            what: "PRIVATE KEY",
        },
        source => TlsError::Read {
            flag,
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Trust anchors from a PEM file of CA certificates.
pub fn read_roots(flag: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(flag, path)? {
        roots.add(cert).map_err(TlsError::Config)?;
    }
    Ok(roots)
}

/// How this node dials other nodes when TLS is on: it trusts `--peer-ca` for their
/// certificates (which must name the address it dials) and presents `--peer-cert`/`--peer-key`,
/// or `--tls-cert`/`--tls-key` when those are absent. `None` when TLS is off.
pub fn peer_client(files: &TlsConfig) -> Result<Option<ClientTlsConfig>, TlsError> {
    let Some(ca) = &files.peer_ca else {
        return Ok(None);
    };
    let identity = match (&files.peer_cert, &files.peer_key) {
        (Some(c), Some(k)) => (("peer-cert", c.as_path()), ("peer-key", k.as_path())),
        _ => match (&files.cert, &files.key) {
            (Some(c), Some(k)) => (("tls-cert", c.as_path()), ("tls-key", k.as_path())),
            _ => return Ok(None),
        },
    };
    client(("peer-ca", ca), Some(identity)).map(Some)
}

/// A command-line client's TLS (kvclient, kvbench): `--ca` turns it on, `--cert`/`--cert-key`
/// add a client certificate. `None` without `--ca`.
pub fn cli_client(
    ca: Option<&Path>,
    cert: Option<&Path>,
    cert_key: Option<&Path>,
) -> Result<Option<ClientTlsConfig>, TlsError> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let identity = cert
        .zip(cert_key)
        .map(|(c, k)| (("cert", c), ("cert-key", k)));
    client(("ca", ca), identity).map(Some)
}

/// [`cli_client`] as a rustls configuration (HTTP/2 by ALPN), for a client that runs TLS under
/// its own connector (kvbench's coalescing one). `None` without `--ca`.
pub fn cli_rustls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    cert_key: Option<&Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(read_roots("ca", ca)?);
    let mut config = match cert.zip(cert_key) {
        Some((c, k)) => {
            builder.with_client_auth_cert(read_certs("cert", c)?, read_key("cert-key", k)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A PEM file and the flag that named it (for error messages).
pub type PemFile<'a> = (&'static str, &'a Path);

/// A client's TLS (kvclient, kvbench, and nodes dialing each other): trust the CA certificates
/// in `ca`, and present `identity` (certificate, key) if given. Each is a (flag, path) pair so
/// an error names the flag.
pub fn client(
    ca: PemFile<'_>,
    identity: Option<(PemFile<'_>, PemFile<'_>)>,
) -> Result<ClientTlsConfig, TlsError> {
    let pem = |(flag, path): PemFile<'_>| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            flag,
            path: path.to_path_buf(),
            source: rustls::pki_types::pem::Error::Io(e),
        })
    };
    // Parsed here for a clear error; tonic takes the PEM text.
    read_roots(ca.0, ca.1)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)?));
    if let Some((cert, key)) = identity {
        read_certs(cert.0, cert.1)?;
        read_key(key.0, key.1)?;
        config = config.identity(Identity::from_pem(pem(cert)?, pem(key)?));
    }
    Ok(config)
}
