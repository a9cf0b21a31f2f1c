//! Throw-away certificate authorities and certificates for the TLS tests (rcgen), written as PEM
//! files like an operator's.

use super::Node;
use host::proto::client_client::ClientClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) usable by servers and clients.
    pub fn leaf(&self, common_name: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/<name>.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl Leaf {
    /// Writes `dir/<name>.pem` and `dir/<name>.key` through a rename each, as a certificate
    /// manager does, so a reader never sees half a file.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let put = |path: PathBuf, text: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            path
        };
        (
            put(dir.join(format!("{name}.pem")), &self.cert),
            put(dir.join(format!("{name}.key")), &self.key),
        )
    }

    /// [`Leaf::write`], each file keeping the modification time of the one it replaces, so
    /// only a signal can tell a watcher of modification times.
    pub fn write_keeping_mtimes(&self, dir: &Path, name: &str) {
        for (path, text) in [
            (dir.join(format!("{name}.pem")), &self.cert),
            (dir.join(format!("{name}.key")), &self.key),
        ] {
            let old = std::fs::metadata(&path).unwrap().modified().unwrap();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&tmp)
                .unwrap()
                .set_modified(old)
                .unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
}

/// An HTTPS client trusting `cas`, presenting `identity` if given.
pub fn https(cas: &[&Ca], identity: Option<&Leaf>) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(pem_certs(&ca.pem).remove(0)).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(pem_certs(&leaf.cert), pem_key(&leaf.key))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn pem_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A gRPC channel over TLS to `node` trusting `ca`, presenting `identity` if given.
pub async fn tls_channel(
    node: &Node,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://{}", node.grpc))?
        .tls_config(tls)?
        .connect()
        .await
}

/// A gRPC client over TLS trusting `ca`, presenting `identity` if given.
pub async fn grpc(
    node: &Node,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<ClientClient<tonic::transport::Channel>, tonic::transport::Error> {
    Ok(ClientClient::new(tls_channel(node, ca, identity).await?))
}

/// `--flag path` pairs as command-line words.
pub fn flags(pairs: &[(&str, &Path)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}
