//! The users file (`--auth-file`): who may do what. JSON, or TOML when the file name ends in
//! `.toml`; read once at start and validated whole, so a typo stops the node instead of
//! locking someone out at the first request.
//!
//! ```toml
//! anonymous = []                      # what a request without credentials may do
//!
//! [[users]]
//! name = "admin"
//! password = "$argon2id$v=19$..."     # `host auth hash-password` prints one
//! permissions = ["read", "write", "admin", "upgrade"]
//!
//! [[users]]
//! name = "app"
//! tokens = ["sha256:..."]             # `host auth new-token` prints a token and this line
//! certificate_names = ["app-client"]  # a client certificate with this CN or SAN is this user
//! permissions = ["read", "write"]
//! prefixes = ["app/"]                 # guest-kv keys this user may touch (all when absent)
//! ```

use super::secret::{parse_password_hash, TokenHash};
use super::{Grants, Permission};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Why the users file cannot be used.
#[derive(Debug, Error)]
pub enum UsersFileError {
    #[error("--auth-file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--auth-file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    anonymous: Vec<Permission>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    certificate_names: Vec<String>,
    permissions: Vec<Permission>,
    #[serde(default)]
    prefixes: Option<Vec<String>>,
}

/// One user: a name, the argon2 hash of their password if they have one, and what they may do.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub(super) password: Option<String>,
    pub grants: Grants,
}

/// Every user of the file, indexed by each way of naming them.
#[derive(Debug, Default)]
pub struct Users {
    pub(super) by_name: HashMap<String, Arc<User>>,
    pub(super) by_token: HashMap<TokenHash, Arc<User>>,
    pub(super) by_certificate: HashMap<String, Arc<User>>,
    pub(super) anonymous: Grants,
}

impl Users {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Users, UsersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let toml = path.extension().is_some_and(|e| e == "toml");
        Users::parse(&text, toml).map_err(|message| UsersFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a users file's text (TOML when `toml`, JSON otherwise).
    pub fn parse(text: &str, toml: bool) -> Result<Users, String> {
        let file: UsersFile = if toml {
            ::toml::from_str(text).map_err(|e| e.to_string())?
        } else {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        };
        let mut users = Users {
            anonymous: Grants::new(file.anonymous, None),
            ..Default::default()
        };
        for entry in file.users {
            users.add(entry)?;
        }
        Ok(users)
    }

    fn add(&mut self, e: UserEntry) -> Result<(), String> {
        let name = e.name.clone();
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(format!(
                "user name {name:?}: must be non-empty, without ':' or control characters"
            ));
        }
        if self.by_name.contains_key(&name) {
            return Err(format!("user {name:?} is listed twice"));
        }
        if e.password.is_none() && e.tokens.is_empty() && e.certificate_names.is_empty() {
            return Err(format!(
                "user {name:?} has no password, token or certificate name: no one could be them"
            ));
        }
        if let Some(hash) = &e.password {
            parse_password_hash(hash).map_err(|m| format!("user {name:?}: password: {m}"))?;
        }
        if let Some(p) = e.prefixes.iter().flatten().find(|p| p.is_empty()) {
            return Err(format!(
                "user {name:?}: prefix {p:?} is empty (leave `prefixes` out for every key)"
            ));
        }
        let user = Arc::new(User {
            name: name.clone(),
            password: e.password,
            grants: Grants::new(e.permissions, e.prefixes),
        });
        for token in &e.tokens {
            let hash = TokenHash::parse(token).map_err(|m| format!("user {name:?}: {m}"))?;
            if self.by_token.insert(hash, user.clone()).is_some() {
                return Err(format!("user {name:?}: a token is listed twice"));
            }
        }
        for cert in &e.certificate_names {
            if self
                .by_certificate
                .insert(cert.clone(), user.clone())
                .is_some()
            {
                return Err(format!(
                    "certificate name {cert:?} is given to two users (or twice)"
                ));
            }
        }
        self.by_name.insert(name, user);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn json_and_toml_say_the_same() {
        let json = format!(
            r#"{{"anonymous": ["read"], "users": [{{"name": "a", "password": "{HASH}",
                "permissions": ["read", "write"], "prefixes": ["app/"]}}]}}"#
        );
        let toml = format!(
            "anonymous = [\"read\"]\n[[users]]\nname = \"a\"\npassword = \"{HASH}\"\n\
             permissions = [\"read\", \"write\"]\nprefixes = [\"app/\"]\n"
        );
        for users in [Users::parse(&json, false), Users::parse(&toml, true)] {
            let users = users.unwrap();
            let a = &users.by_name["a"];
            assert!(a.grants.has(Permission::Write));
            assert!(!a.grants.has(Permission::Admin));
            assert!(users.anonymous.has(Permission::Read));
        }
    }

    #[test]
    fn mistakes_are_named() {
        let bad = [
            (
                r#"{"users": [{"name": "a", "permissions": []}]}"#,
                "no password",
            ),
            (
                r#"{"users": [{"name": "a", "password": "plain", "permissions": []}]}"#,
                "password",
            ),
            (
                r#"{"users": [{"name": "a:b", "tokens": [], "certificate_names": ["x"], "permissions": []}]}"#,
                "':'",
            ),
            (
                r#"{"users": [{"name": "a", "certificate_names": ["x"], "permissions": ["root"]}]}"#,
                "unknown variant",
            ),
            (
                r#"{"users": [{"name": "a", "tokens": ["abc"], "permissions": []}]}"#,
                "sha256:",
            ),
            (
                r#"{"users": [{"name": "a", "certificate_names": ["x"], "permissions": []},
                              {"name": "b", "certificate_names": ["x"], "permissions": []}]}"#,
                "two users",
            ),
            (r#"{"users": [], "admins": []}"#, "unknown field"),
        ];
        for (text, expected) in bad {
            let err = Users::parse(text, false).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
