//! The connection flags `kvclient` and `kvbench` share: TLS (`--ca`, `--cert`, `--cert-key`) and
//! credentials (`--user` with `--password`, or `--token`), each also read from the environment.

use clap::Args;
use host::auth::WithCredentials;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// PEM CA certificates to trust: connect over TLS (a node started with --tls-cert).
    #[arg(long, env = "RAFTWASM_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate to present (a node started with --tls-client-ca); needs --ca.
    #[arg(long, env = "RAFTWASM_CERT", requires_all = ["ca", "cert_key"])]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert (kvclient's --key is the data key).
    #[arg(long, env = "RAFTWASM_CERT_KEY", requires = "cert")]
    pub cert_key: Option<PathBuf>,
    /// User name, with --password (a node started with --auth-file).
    #[arg(long, env = "RAFTWASM_USER", requires = "password")]
    pub user: Option<String>,
    /// Password of --user (the environment keeps it out of the process list).
    #[arg(
        long,
        env = "RAFTWASM_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Bearer token, instead of --user and --password.
    #[arg(
        long,
        env = "RAFTWASM_TOKEN",
        conflicts_with = "user",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl ConnectionArgs {
    /// The credentials every call carries (none without --user or --token).
    pub fn credentials(&self) -> anyhow::Result<WithCredentials> {
        WithCredentials::from_flags(
            self.user.as_deref(),
            self.password.as_deref(),
            self.token.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }
}
