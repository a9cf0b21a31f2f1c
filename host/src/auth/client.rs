//! The client side of authentication (kvclient, kvbench, tests): credentials as the
//! `authorization` value a node expects, added to every call of a gRPC client.

use base64::Engine;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// `Basic` credentials: a user name and password.
pub fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `Bearer` credentials: a token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Adds the same `authorization` metadata to every call (nothing when there are no
/// credentials).
#[derive(Debug, Clone, Default)]
pub struct WithCredentials(Option<MetadataValue<Ascii>>);

impl WithCredentials {
    /// From a command line's `--user`/`--password` or `--token` (at most one of the two).
    pub fn from_flags(
        user: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, String> {
        let value = match (user, password, token) {
            (None, None, None) => return Ok(WithCredentials(None)),
            (Some(u), Some(p), None) => basic(u, p),
            (None, None, Some(t)) => bearer(t),
            (Some(_), None, None) => return Err("--user needs --password".into()),
            (None, Some(_), None) => return Err("--password needs --user".into()),
            _ => return Err("give --user and --password, or --token, not both".into()),
        };
        value
            .parse()
            .map(|v| WithCredentials(Some(v)))
            .map_err(|_| "credentials must be printable ASCII".to_string())
    }
}

impl Interceptor for WithCredentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(super::AUTHORIZATION, v.clone());
        }
        Ok(req)
    }
}
