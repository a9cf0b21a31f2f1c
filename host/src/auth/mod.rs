//! Authentication and authorization (`--auth-file`): who a request comes from ([`Caller`], made
//! by the [`Authenticator`] from HTTP Basic or Bearer credentials, gRPC metadata of the same
//! form, or a client certificate's names) and what they may do ([`Permission`]s, optionally
//! limited to guest-kv key prefixes). The HTTP gateway and the gRPC `Client` service
//! authenticate; the service layer checks permissions, so both APIs enforce the same rules.
//!
//! Forwarding: a follower passes the credentials it received on to the leader, which checks
//! them again. A user known only by a client certificate (which the leader never sees) is
//! named in [`USER_HEADER`]; the leader believes that header only from a connection that
//! presents a cluster node's certificate, never on its own.
//!
//! Without `--auth-file` every request may do everything, as before.

mod cert;
mod client;
mod secret;
mod users;

pub use cert::names as certificate_names;
pub use client::{basic, bearer, WithCredentials};
pub use secret::{hash_password, new_token, TokenHash};
pub use users::{User, Users, UsersFileError};

use base64::Engine;
use secret::PasswordCheck;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// gRPC metadata naming the user a node forwards a request for.
pub const USER_HEADER: &str = "x-raftwasm-user";
/// gRPC metadata and HTTP header carrying credentials (`Basic ...` or `Bearer ...`).
pub const AUTHORIZATION: &str = "authorization";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// get, scan, query, status, watch.
    Read,
    /// put, delete, apply.
    Write,
    /// Membership, leadership transfer, snapshots.
    Admin,
    /// Replacing the guest module.
    Upgrade,
}

impl Permission {
    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
            Permission::Admin => 4,
            Permission::Upgrade => 8,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
            Permission::Upgrade => "upgrade",
        })
    }
}

/// A set of permissions, and the guest-kv key prefixes reads and writes are limited to (every
/// key when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    bits: u8,
    prefixes: Option<Vec<String>>,
}

impl Grants {
    pub fn new(permissions: Vec<Permission>, prefixes: Option<Vec<String>>) -> Self {
        Grants {
            bits: permissions.iter().fold(0, |b, p| b | p.bit()),
            prefixes,
        }
    }

    pub fn has(&self, p: Permission) -> bool {
        self.bits & p.bit() != 0
    }

    fn covers(&self, scope: &Scope<'_>) -> bool {
        let Some(prefixes) = &self.prefixes else {
            return true;
        };
        let under = |k: &str| prefixes.iter().any(|p| k.starts_with(p.as_str()));
        match scope {
            Scope::Cluster => true,
            Scope::Key(k) => under(k),
            Scope::Scan(prefix) => prefix.is_some_and(under),
            Scope::AnyKey => false,
        }
    }
}

/// What a request touches, for the key prefixes a user may be limited to.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// No keys: status, membership, snapshots, upgrades.
    Cluster,
    /// One guest-kv key.
    Key(&'a str),
    /// A guest-kv scan with this prefix (a limited user must give one within their prefixes).
    Scan(Option<&'a str>),
    /// An opaque command or query, which may touch any key.
    AnyKey,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No credentials where some are needed, or credentials that do not check out.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known user without the permission.
    #[error("{0}")]
    Denied(String),
}

/// Who a request is for.
#[derive(Debug, Clone)]
enum Principal {
    /// Authentication is off on this node.
    Open,
    Anonymous(Grants),
    User(Arc<User>),
}

/// The caller of one request: who they are, the hops it was forwarded so far, and the
/// credentials to pass on if this node forwards it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hops: u32,
    principal: Principal,
    authorization: Option<String>,
}

impl Caller {
    /// A caller on a node without authentication.
    pub fn open(hops: u32) -> Self {
        Caller {
            hops,
            principal: Principal::Open,
            authorization: None,
        }
    }

    /// The user's name, for audit lines: `anonymous` without credentials, `-` with
    /// authentication off.
    pub fn name(&self) -> &str {
        match &self.principal {
            Principal::Open => "-",
            Principal::Anonymous(_) => "anonymous",
            Principal::User(u) => &u.name,
        }
    }

    /// Allows the request if the caller holds `permission` over `scope`.
    pub fn allow(&self, permission: Permission, scope: Scope<'_>) -> Result<(), AuthError> {
        match &self.principal {
            Principal::Open => Ok(()),
            Principal::Anonymous(g) if g.has(permission) && g.covers(&scope) => Ok(()),
            Principal::Anonymous(_) => Err(AuthError::Unauthenticated(format!(
                "authentication required for {permission}: give a user name and password (HTTP \
                 Basic), a bearer token, or a client certificate"
            ))),
            Principal::User(u) if !u.grants.has(permission) => Err(AuthError::Denied(format!(
                "user {} lacks the {permission} permission",
                u.name
            ))),
            Principal::User(u) if !u.grants.covers(&scope) => Err(AuthError::Denied(format!(
                "user {} may use only keys under {:?}{}",
                u.name,
                u.grants.prefixes.as_deref().unwrap_or_default(),
                match scope {
                    Scope::Scan(_) => ": scan with a prefix within them",
                    Scope::AnyKey => ": raw apply and query may touch any key",
                    _ => "",
                }
            ))),
            Principal::User(_) => Ok(()),
        }
    }

    /// Metadata for forwarding this request to another node: the credentials as received, and
    /// the user's name for a node that trusts this one's certificate.
    pub fn forwarding(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(v) = self.authorization.as_deref().and_then(|a| a.parse().ok()) {
            metadata.insert(AUTHORIZATION, v);
        }
        if let Principal::User(u) = &self.principal {
            if let Ok(v) = u.name.parse() {
                metadata.insert(USER_HEADER, v);
            }
        }
    }
}

/// What a request brings to be authenticated by.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    pub hops: u32,
    /// The `authorization` header (HTTP) or metadata (gRPC).
    pub authorization: Option<&'a str>,
    /// Names in the client certificate the connection presented (see [`certificate_names`]).
    pub certificate_names: Vec<String>,
    /// The user another node forwarded the request for: give it only when the connection
    /// presented a cluster node's certificate.
    pub forwarded_user: Option<&'a str>,
}

struct Inner {
    users: Users,
    passwords: PasswordCheck,
}

/// Authenticates requests against the users file; lets everything through without one.
#[derive(Clone, Default)]
pub struct Authenticator {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

const BAD_PASSWORD: &str = "invalid user name or password";

impl Authenticator {
    /// Checks requests against the users file at `path`.
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        Self::new(Users::load(path)?).map_err(|message| UsersFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Checks requests against `users`. Fails only if the decoy hash cannot be made (no
    /// randomness for its salt).
    pub fn new(users: Users) -> Result<Self, String> {
        let passwords = PasswordCheck::new()?;
        Ok(Authenticator {
            inner: Some(Arc::new(Inner { users, passwords })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Who `c` says the caller is. A trusted forwarded user comes first, then credentials, then
    /// the client certificate's names; with none of them, the caller is anonymous.
    pub async fn authenticate(&self, c: Credentials<'_>) -> Result<Caller, AuthError> {
        let authorization = c.authorization.map(str::to_string);
        let Some(inner) = &self.inner else {
            return Ok(Caller {
                hops: c.hops,
                principal: Principal::Open,
                authorization,
            });
        };
        let users = &inner.users;
        let principal = if let Some(name) = c.forwarded_user {
            let user = users.by_name.get(name).ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "user {name:?}, forwarded by another node, is not in this node's users file"
                ))
            })?;
            Principal::User(user.clone())
        } else if let Some(value) = c.authorization {
            Principal::User(inner.check(value).await?)
        } else if let Some(user) = c
            .certificate_names
            .iter()
            .find_map(|n| users.by_certificate.get(n))
        {
            Principal::User(user.clone())
        } else {
            Principal::Anonymous(users.anonymous.clone())
        };
        Ok(Caller {
            hops: c.hops,
            principal,
            authorization,
        })
    }
}

impl Inner {
    /// The user an `authorization` value proves.
    async fn check(&self, value: &str) -> Result<Arc<User>, AuthError> {
        let unauthenticated = |m: &str| AuthError::Unauthenticated(m.to_string());
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .users
                .by_token
                .get(&TokenHash::of(rest))
                .cloned()
                .ok_or_else(|| unauthenticated("invalid bearer token"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthenticated(
                "unsupported authorization scheme: use Basic (user name and password) or Bearer \
                 (a token)",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
        // An unknown user costs a verification too (against a decoy hash), and gets the same
        // answer as a wrong password, so neither timing nor text tells whether the user exists.
        let user = self.users.by_name.get(name);
        let hash = user.and_then(|u| u.password.as_deref());
        match (self.passwords.verify(hash, password).await, user) {
            (true, Some(user)) => Ok(user.clone()),
            _ => Err(unauthenticated(BAD_PASSWORD)),
        }
    }
}

#[cfg(test)]
mod tests;
