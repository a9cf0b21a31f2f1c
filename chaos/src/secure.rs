//! The secure mode (`--secure`): every node serves TLS to clients and to the other nodes and
//! checks credentials against a users file, as a production cluster would; the suite's clients
//! present a client certificate and a password. Everything is made fresh in the work dir: a CA,
//! a certificate per node naming its address, a client certificate, a users file.

use host::auth::{hash_password, WithCredentials};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::{Path, PathBuf};
use tonic::transport::ClientTlsConfig;

/// The user every client of the suite is.
const USER: &str = "chaos";

/// What the secure mode made.
#[derive(Debug, Clone)]
pub struct Secure {
    dir: PathBuf,
    password: String,
}

impl Secure {
    /// Writes the CA, node certificates (for `ips`, in order, named `names`), the client
    /// certificate and the users file under `work/secure`.
    pub fn generate(work: &Path, names: &[String], ips: &[String]) -> anyhow::Result<Self> {
        let dir = work.join("secure");
        std::fs::create_dir_all(&dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "chaos CA");
        let ca = params.self_signed(&key)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        let issuer = Issuer::new(params, key);
        let leaf = |name: &str, sans: Vec<String>| -> anyhow::Result<()> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer)?;
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
            Ok(())
        };
        for (name, ip) in names.iter().zip(ips) {
            leaf(name, vec![ip.clone()])?;
        }
        // A client certificate names no address, so it can never pass for a node.
        leaf("client", Vec::new())?;
        let password = format!("chaos-{}", std::process::id());
        let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
        std::fs::write(
            dir.join("users.toml"),
            format!(
                "[[users]]\nname = \"{USER}\"\npassword = \"{hash}\"\n\
                 permissions = [\"read\", \"write\", \"admin\", \"upgrade\"]\n"
            ),
        )?;
        Ok(Secure { dir, password })
    }

    /// The flags node `name` runs with.
    pub fn node_args(&self, name: &str) -> Vec<String> {
        let file = |f: String| self.dir.join(f).display().to_string();
        vec![
            "--tls-cert".into(),
            file(format!("{name}.pem")),
            "--tls-key".into(),
            file(format!("{name}.key")),
            "--peer-ca".into(),
            file("ca.pem".into()),
            "--tls-client-ca".into(),
            file("ca.pem".into()),
            "--auth-file".into(),
            file("users.toml".into()),
        ]
    }

    /// The suite's clients' TLS: trust the CA, present the client certificate.
    pub fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let tls = host::tls::cli_client(
            Some(&self.dir.join("ca.pem")),
            Some(&self.dir.join("client.pem")),
            Some(&self.dir.join("client.key")),
        )?;
        tls.ok_or_else(|| anyhow::anyhow!("no TLS configuration"))
    }

    /// The suite's clients' credentials.
    pub fn credentials(&self) -> WithCredentials {
        WithCredentials::from_flags(Some(USER), Some(&self.password), None)
            .expect("ASCII credentials")
    }
}
