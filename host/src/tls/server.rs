//! One listener's server configuration: built from the PEM files, swapped whole on reload
//! (file change or SIGHUP), and on the gRPC listener the node certificates the `Raft` service
//! admits.

use super::{provider, read_certs, read_key, read_roots, TlsError};
use crate::config::TlsConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files' modification times are compared.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// ALPN for the gRPC listener: HTTP/2 only.
const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for the HTTP gateway: HTTP/2 or HTTP/1.1 (curl and browsers).
const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Which certificates a listener asks its clients for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The gRPC port: clients (`--tls-client-ca`) and other nodes (`--peer-ca`).
    Grpc,
    /// The HTTP gateway: clients only.
    Http,
}

/// What one load of the files gives: the server configuration and, on the gRPC listener, the
/// verifier of node certificates (`--peer-ca` alone) that the `Raft` service admits by.
struct Loaded {
    server: Arc<ServerConfig>,
    peers: Option<Arc<dyn ClientCertVerifier>>,
}

fn client_verifier(
    flag: &'static str,
    path: &Path,
    roots: RootCertStore,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|source| TlsError::Verifier {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a listener's configuration from the files `files` names.
fn load(files: &TlsConfig, listener: Listener) -> Result<Loaded, TlsError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(TlsError::Config(rustls::Error::General(
            "a certificate and its key are both needed".into(),
        )));
    };
    let chain = read_certs("tls-cert", cert)?;
    let key = read_key("tls-key", key)?;
    let peer_ca = files
        .peer_ca
        .as_ref()
        .filter(|_| listener == Listener::Grpc);
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &files.client_ca {
        roots.roots.extend(read_roots("tls-client-ca", ca)?.roots);
    }
    let peers = match peer_ca {
        Some(ca) => {
            let peer_roots = read_roots("peer-ca", ca)?;
            roots.roots.extend(peer_roots.roots.iter().cloned());
            Some(client_verifier("peer-ca", ca, peer_roots, false)?)
        }
        None => None,
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match (&files.client_ca, peer_ca) {
        (None, None) => builder.with_no_client_auth(),
        // Without --tls-client-ca clients need no certificate; nodes show theirs anyway, and the
        // Raft service admits only those --peer-ca signed.
        (client_ca, Some(ca)) => builder.with_client_cert_verifier(client_verifier(
            "peer-ca",
            client_ca.as_deref().unwrap_or(ca),
            roots,
            client_ca.is_none(),
        )?),
        (Some(ca), None) => {
            builder.with_client_cert_verifier(client_verifier("tls-client-ca", ca, roots, false)?)
        }
    };
    let mut server = builder.with_single_cert(chain, key)?;
    server.alpn_protocols = match listener {
        Listener::Grpc => ALPN_GRPC,
        Listener::Http => ALPN_HTTP,
    }
    .iter()
    .map(|p| p.to_vec())
    .collect();
    Ok(Loaded {
        server: Arc::new(server),
        peers,
    })
}

/// One listener's TLS configuration, replaced whole on reload. Clones share it.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsConfig,
    listener: Listener,
    current: Arc<RwLock<Arc<Loaded>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files `files` names for `listener`.
    pub fn load(files: &TlsConfig, listener: Listener) -> Result<Self, TlsError> {
        Ok(ServerTls {
            files: files.clone(),
            listener,
            current: Arc::new(RwLock::new(Arc::new(load(files, listener)?))),
        })
    }

    /// Reads the files again; on any error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load(&self.files, self.listener)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.loaded().server.clone())
    }

    /// The node certificates this listener admits (`--peer-ca`), following reloads.
    pub fn peers(&self) -> PeerCerts {
        PeerCerts { tls: self.clone() }
    }

    /// Modification times of the files, to notice a change.
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [
            &self.files.cert,
            &self.files.key,
            &self.files.client_ca,
            &self.files.peer_ca,
        ]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
    }
}

/// Node certificates as the `Raft` service checks them: signed by `--peer-ca`, and naming the
/// address of the node they speak for. Follows the listener's reloads.
#[derive(Clone, Debug)]
pub struct PeerCerts {
    tls: ServerTls,
}

/// Why a connection may not speak for a node.
#[derive(Debug, Error)]
pub enum PeerRefused {
    #[error(
        "no certificate: this service is for cluster nodes, which present one --peer-ca signed"
    )]
    NoCertificate,
    #[error("not a node certificate (--peer-ca did not sign it): {0}")]
    Untrusted(rustls::Error),
    #[error("the certificate does not name {hosts:?}, the address of the node it speaks for")]
    WrongNode { hosts: Vec<String> },
}

impl PeerCerts {
    /// Admits `certs` (the peer's chain, leaf first) if `--peer-ca` signed them and, when
    /// `hosts` is not empty, the leaf names one of `hosts` (as a DNS name or IP address).
    pub fn admit(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        hosts: &[String],
    ) -> Result<(), PeerRefused> {
        let Some((leaf, chain)) = certs.and_then(|c| c.split_first()) else {
            return Err(PeerRefused::NoCertificate);
        };
        let Some(verifier) = self.tls.loaded().peers.clone() else {
            return Err(PeerRefused::Untrusted(rustls::Error::General(
                "this node has no --peer-ca".into(),
            )));
        };
        verifier
            .verify_client_cert(leaf, chain, rustls::pki_types::UnixTime::now())
            .map_err(PeerRefused::Untrusted)?;
        if hosts.is_empty() || hosts.iter().any(|h| names(leaf, h)) {
            Ok(())
        } else {
            Err(PeerRefused::WrongNode {
                hosts: hosts.to_vec(),
            })
        }
    }
}

/// True when `cert` is valid for `host` (a DNS name or an IP address).
fn names(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = rustls::pki_types::ServerName::try_from(host) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|ee| ee.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

/// Reloads every listener's configuration on SIGHUP, and when a file's modification time
/// changes; then calls `reloaded` (which re-reads what this node presents when it dials others).
/// Runs until the runtime stops.
pub fn watch(listeners: Vec<ServerTls>, reloaded: impl Fn() + Send + 'static) {
    if listeners.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut stamps: Vec<_> = listeners.iter().map(ServerTls::stamps).collect();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            let signalled = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match &mut hangup {
                        Some(h) => h.recv().await,
                        None => None,
                    }
                } => true,
            };
            let mut changed = false;
            for (tls, seen) in listeners.iter().zip(stamps.iter_mut()) {
                let now = tls.stamps();
                if !signalled && now == *seen {
                    continue;
                }
                *seen = now;
                match tls.reload() {
                    Ok(()) => changed = true,
                    Err(e) => tracing::error!(
                        error = %e,
                        "TLS reload failed; keeping the certificates in use"
                    ),
                }
            }
            if changed {
                tracing::info!(signalled, "TLS certificates reloaded");
                reloaded();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_broken_file_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "n1");
        let files = TlsConfig {
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            ..Default::default()
        };
        let tls = ServerTls::load(&files, Listener::Grpc).unwrap();
        let before = tls.current.read().unwrap().clone();
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
        assert!(Arc::ptr_eq(&before, &tls.current.read().unwrap()));
        // A key that is not the certificate's.
        write_pair(dir.path(), "n1");
        let (_, other_key) = write_pair(dir.path(), "other");
        std::fs::copy(&other_key, &key).unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.read().unwrap()));
        // Both files right again: the new configuration is taken.
        write_pair(dir.path(), "n1");
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current.read().unwrap()));
    }

    #[test]
    fn missing_files_name_their_flag() {
        let files = TlsConfig {
            cert: Some("/nonexistent/n1.pem".into()),
            key: Some("/nonexistent/n1.key".into()),
            ..Default::default()
        };
        let err = ServerTls::load(&files, Listener::Grpc)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-cert /nonexistent/n1.pem"), "{err}");
    }
}
