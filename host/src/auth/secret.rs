//! Secrets: argon2 password hashes (made by `host auth hash-password`, checked per request with
//! a cache of what already verified, since argon2 is slow on purpose), and bearer tokens, which
//! are random enough to be stored as a plain SHA-256.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Mutex;

/// Prefix of a stored token hash in the users file.
const TOKEN_HASH_PREFIX: &str = "sha256:";
/// Prefix of every token `host auth new-token` makes (to recognize one in a config or a leak).
const TOKEN_PREFIX: &str = "rwt_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Verified (user, password) pairs kept; the cache starts over when full.
const CACHE_ENTRIES: usize = 4096;

/// The argon2id hash (PHC string) of `password`, with a random salt and the crate's default
/// parameters (OWASP's minimum: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `hash` is an argon2 PHC string.
pub(super) fn parse_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!(
            "not a password hash ({e}); store `host auth hash-password`'s output, not the password"
        )
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "{} is not argon2; make one with `host auth hash-password`",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// A new bearer token and the line that stores it in the users file.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let stored = format!("{TOKEN_HASH_PREFIX}{}", hex::encode(Sha256::digest(&token)));
    Ok((token, stored))
}

/// The SHA-256 of a bearer token: how the users file stores it and how a request's token is
/// looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// From the users file's `sha256:<64 hex digits>`.
    pub(super) fn parse(stored: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "a token must be stored as {TOKEN_HASH_PREFIX}<64 hex digits> (`host auth \
                 new-token` prints one), not the token itself"
            )
        };
        let digits = stored.strip_prefix(TOKEN_HASH_PREFIX).ok_or_else(bad)?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(digits, &mut hash).map_err(|_| bad())?;
        Ok(TokenHash(hash))
    }
}

/// Checks passwords against argon2 hashes, remembering which pairs verified.
#[derive(Debug)]
pub(super) struct PasswordCheck {
    /// SHA-256 of (hash, password) of each pair that verified. A changed hash (a new users
    /// file) does not match old entries.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Checked against when the user does not exist, so an unknown name costs what a wrong
    /// password costs and timing does not tell them apart.
    decoy: String,
}

impl PasswordCheck {
    pub(super) fn new() -> Result<Self, String> {
        Ok(PasswordCheck {
            verified: Mutex::default(),
            decoy: hash_password("decoy: no user has this password")?,
        })
    }

    fn key(hash: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(hash.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// True when `password` matches `hash`; `None` for `hash` checks against the decoy (and is
    /// always false). Runs argon2 on a blocking thread unless the pair verified before.
    pub(super) async fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        let key = hash.map(|h| Self::key(h, password));
        if let Some(key) = key {
            if self
                .verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
            {
                return true;
            }
        }
        let (stored, password) = (
            hash.unwrap_or(&self.decoy).to_string(),
            password.to_string(),
        );
        let ok = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), stored.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        match key {
            Some(key) if ok => {
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= CACHE_ENTRIES {
                    verified.clear();
                }
                verified.insert(key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("s3cret").unwrap();
        parse_password_hash(&hash).unwrap();
        let check = PasswordCheck::new().unwrap();
        assert!(check.verify(Some(&hash), "s3cret").await);
        // From the cache this time, and still only for the right password.
        assert!(check.verify(Some(&hash), "s3cret").await);
        assert!(!check.verify(Some(&hash), "s3cret ").await);
        assert!(!check.verify(None, "decoy: no user has this password").await);
    }

    #[test]
    fn tokens_are_stored_as_their_hash() {
        let (token, stored) = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(TokenHash::parse(&stored).unwrap(), TokenHash::of(&token));
        assert!(TokenHash::parse(&token).is_err());
    }
}
