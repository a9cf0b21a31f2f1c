//! guest-kv's typed calls: get, put, delete and scan over [`Service::apply`] and
//! [`Service::query`], built and parsed with guest-kv's own schema ([`guest_kv::schema`]), so
//! the host and the guest cannot disagree on a field name.
//!
//! These calls assume the node runs guest-kv (or a guest that speaks its JSON, as guest-kv v2
//! does); with any other guest they fail with an internal error saying so.
//!
//! Behaviour shared by HTTP and gRPC, as etcd's: deleting a missing key succeeds with
//! `deleted: false` (etcd's `deleted: 0`); in a scan an empty `prefix`, `start` or `end` means
//! the same as leaving it out.

use super::{Consistency, Route, Service, ServiceError};
use crate::auth::{Caller, Permission, Scope};
use crate::types::SessionRef;
use guest_kv::schema::{
    self, Command, DeleteResponse, GetResponse, PutResponse, Query, ScanResponse,
};
use serde::{Deserialize, Serialize};

/// Result of a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub prev: Option<String>,
    pub log_index: u64,
}

/// Result of a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub deleted: bool,
    pub prev: Option<String>,
    pub log_index: u64,
}

/// What a scan asks for. Empty strings count as absent (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanParams {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<usize>,
}

impl ScanParams {
    /// The guest-kv query, with empty strings dropped.
    fn to_query(&self) -> Query {
        let given = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Query::Scan {
            prefix: given(&self.prefix),
            start: given(&self.start),
            end: given(&self.end),
            limit: self.limit,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    schema::decode(bytes).map_err(not_guest_kv)
}

fn not_guest_kv(e: serde_json::Error) -> ServiceError {
    ServiceError::internal(format!(
        "the guest's answer is not guest-kv JSON ({e}); is this node running guest-kv?"
    ))
}

impl Service {
    fn check_key(&self, key: &str) -> Result<(), ServiceError> {
        if key.is_empty() {
            return Err(ServiceError::invalid("key must not be empty"));
        }
        Self::check_size("key", key.len(), self.inner.limits.max_key_bytes)
    }

    /// The value of `key` ([`ServiceError::NotFound`] if it is not set).
    pub async fn get(
        &self,
        caller: &Caller,
        key: &str,
        consistency: Consistency,
    ) -> Result<String, ServiceError> {
        self.check_key(key)?;
        caller.allow(Permission::Read, Scope::Key(key))?;
        let query = Query::Get {
            key: key.to_string(),
        };
        if let Some(leader) = self.read_barrier(caller, consistency).await? {
            return leader.get(key).await;
        }
        let got: GetResponse = parse(&self.query_here(query.encode()).await?)?;
        got.value
            .ok_or_else(|| ServiceError::not_found(format!("key {key:?} not found")))
    }

    /// Sets `key` to `value` (once per `session` command: see [`Service::apply`]).
    pub async fn put(
        &self,
        caller: &Caller,
        key: &str,
        value: &str,
        session: Option<SessionRef>,
    ) -> Result<PutResult, ServiceError> {
        self.check_key(key)?;
        caller.allow(Permission::Write, Scope::Key(key))?;
        Self::check_size("value", value.len(), self.inner.limits.max_value_bytes)?;
        let command = Command::Put {
            key: key.to_string(),
            value: value.to_string(),
        };
        let applied = match self.propose(caller, command.encode(), session).await? {
            Route::Here(applied) => applied,
            Route::Leader(leader) => return leader.put(key, value, session).await,
        };
        let put = PutResponse::decode(&applied.response).map_err(not_guest_kv)?;
        Ok(PutResult {
            prev: put.prev,
            log_index: applied.log_index,
        })
    }

    /// Removes `key`; `deleted` says whether it was there.
    pub async fn delete(
        &self,
        caller: &Caller,
        key: &str,
        session: Option<SessionRef>,
    ) -> Result<DeleteResult, ServiceError> {
        self.check_key(key)?;
        caller.allow(Permission::Write, Scope::Key(key))?;
        let command = Command::Delete {
            key: key.to_string(),
        };
        let applied = match self.propose(caller, command.encode(), session).await? {
            Route::Here(applied) => applied,
            Route::Leader(leader) => return leader.delete(key, session).await,
        };
        let d: DeleteResponse = parse(&applied.response)?;
        Ok(DeleteResult {
            deleted: d.deleted,
            prev: d.prev,
            log_index: applied.log_index,
        })
    }

    /// Keys in order, by prefix and range.
    pub async fn scan(
        &self,
        caller: &Caller,
        params: &ScanParams,
        consistency: Consistency,
    ) -> Result<ScanResponse, ServiceError> {
        let prefix = params.prefix.as_deref().filter(|p| !p.is_empty());
        caller.allow(Permission::Read, Scope::Scan(prefix))?;
        if let Some(leader) = self.read_barrier(caller, consistency).await? {
            return leader.scan(params).await;
        }
        parse(&self.query_here(params.to_query().encode()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_scan_parameters_count_as_absent() {
        let params = ScanParams {
            prefix: Some(String::new()),
            start: Some(String::new()),
            end: Some(String::new()),
            limit: None,
        };
        assert_eq!(params.to_query(), ScanParams::default().to_query());
    }
}
