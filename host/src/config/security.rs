//! The security groups of the configuration (TLS: `--tls-*`, `--peer-*`; authentication:
//! `--auth-file`) and the rule that keeps a node without TLS and client authentication on
//! loopback unless `--insecure`.

use super::{host_of, invalid, ConfigError, NodeConfig};
use std::net::IpAddr;
use std::path::PathBuf;

/// TLS (`--tls-*` for clients, `--peer-*` between nodes). Off when no certificate is given;
/// the files are read at start and again when they change (see `crate::tls`).
///
/// One gRPC port carries both the client and the node-to-node services, so a TLS node serves
/// `cert` to clients and nodes alike, and other nodes check it against `peer_ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first, served on both listeners (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (`--tls-key`).
    pub key: Option<PathBuf>,
    /// PEM CA certificates: when set, every client must present a certificate one of them
    /// signed (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
    /// PEM CA certificates that sign node certificates (`--peer-ca`): the `Raft` service admits
    /// only those, naming the address of the node they speak for; dialing another node checks
    /// its certificate against them.
    pub peer_ca: Option<PathBuf>,
    /// The certificate this node presents when it dials others (`--peer-cert`); `cert` when
    /// absent. It must name this node's advertised address.
    pub peer_cert: Option<PathBuf>,
    /// PEM private key of `peer_cert` (`--peer-key`).
    pub peer_key: Option<PathBuf>,
}

impl TlsConfig {
    /// True when the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let pair = |a: &Option<PathBuf>, b: &Option<PathBuf>, names: &str| match (a, b) {
            (Some(_), None) | (None, Some(_)) => Err(invalid(format!(
                "{names} go together: give both or neither"
            ))),
            _ => Ok(()),
        };
        pair(&self.cert, &self.key, "--tls-cert and --tls-key")?;
        pair(
            &self.peer_cert,
            &self.peer_key,
            "--peer-cert and --peer-key",
        )?;
        let needs_cert = [
            ("--tls-client-ca", &self.client_ca),
            ("--peer-ca", &self.peer_ca),
            ("--peer-cert", &self.peer_cert),
        ];
        if !self.enabled() {
            if let Some((flag, _)) = needs_cert.iter().find(|(_, v)| v.is_some()) {
                return Err(invalid(format!(
                    "{flag} is for a TLS node: it needs --tls-cert and --tls-key"
                )));
            }
        } else if self.peer_ca.is_none() {
            return Err(invalid(
                "--tls-cert: the gRPC port also carries node-to-node traffic, so a TLS node needs \
                 --peer-ca, the CA that signs node certificates (often the same file as \
                 --tls-client-ca)",
            ));
        }
        Ok(())
    }
}

/// Authentication and authorization (`--auth-file`). Off (everyone may do everything) when no
/// users file is given; the file is read once at start (see `crate::auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// The users file: JSON, or TOML when its name ends in `.toml`.
    pub users_file: Option<PathBuf>,
}

/// True for `localhost` and loopback addresses: a listener there is reachable from this machine
/// only. Any other name may resolve to an outside interface, so it counts as exposed.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl NodeConfig {
    /// Refuses to listen beyond loopback without TLS and client authentication, unless
    /// `--insecure` says the network is trusted. Loopback-only nodes (`make run`) need nothing.
    pub(super) fn check_exposure(&self) -> Result<(), ConfigError> {
        let net = &self.network;
        let exposed = [("--address", &net.address), ("--http", &net.http_address)]
            .into_iter()
            .find(|(_, addr)| !is_loopback(host_of(addr)));
        // Clients prove who they are with a certificate or with credentials, which only TLS
        // keeps from being read on the way.
        let authenticated = self.tls.client_ca.is_some() || self.auth.users_file.is_some();
        let guarded = self.tls.enabled() && authenticated;
        match exposed {
            Some((flag, addr)) if !guarded && !net.insecure => Err(invalid(format!(
                "{flag} {addr} listens beyond this machine without TLS and client \
                 authentication: give --tls-cert, --tls-key and --peer-ca, with --tls-client-ca \
                 or --auth-file (or both), or --insecure on a network you trust"
            ))),
            _ => Ok(()),
        }
    }
}
