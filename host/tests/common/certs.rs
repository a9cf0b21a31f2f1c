//! Throw-away certificate authorities and certificates for the TLS tests (rcgen), written as PEM
//! files like an operator's.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::{Path, PathBuf};

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
