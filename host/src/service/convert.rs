//! Every conversion between the protobuf messages of the `Client` service and the service
//! layer's domain types, in both directions: the gRPC server ([`crate::grpc::client_service`])
//! and the leader forwarder ([`super::forward`]) both use these, so a field is mapped once.
//!
//! proto3 strings cannot be absent: an empty string stands for "none" (see [`non_empty`]).

use super::{
    Applied, Consistency, Counters, DeleteResult, KeyValue, MemberStatus, ModuleUpgrade, PutResult,
    ScanParams, ScanResponse, SnapshotInfo, StateHash, Status,
};
use crate::proto;
use crate::types::{ModuleRecord, SessionRef};

/// `None` for the empty string: how proto3 says a string field is absent.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<i32> for Consistency {
    /// Unknown values read linearizably: the safe choice.
    fn from(value: i32) -> Self {
        match proto::Consistency::try_from(value) {
            Ok(proto::Consistency::Stale) => Consistency::Stale,
            _ => Consistency::Linearizable,
        }
    }
}

impl From<proto::ScanRequest> for ScanParams {
    fn from(r: proto::ScanRequest) -> Self {
        ScanParams {
            prefix: non_empty(r.prefix),
            start: non_empty(r.start),
            end: non_empty(r.end),
            limit: (r.limit > 0).then_some(r.limit as usize),
        }
    }
}

impl From<&ScanParams> for proto::ScanRequest {
    /// A forwarded scan: the leader reads linearizably.
    fn from(p: &ScanParams) -> Self {
        proto::ScanRequest {
            prefix: p.prefix.clone().unwrap_or_default(),
            start: p.start.clone().unwrap_or_default(),
            end: p.end.clone().unwrap_or_default(),
            limit: p.limit.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
            consistency: proto::Consistency::Linearizable.into(),
        }
    }
}

impl From<proto::PutReply> for PutResult {
    fn from(r: proto::PutReply) -> Self {
        PutResult {
            prev: r.prev,
            log_index: r.log_index,
        }
    }
}

impl From<proto::DeleteReply> for DeleteResult {
    fn from(r: proto::DeleteReply) -> Self {
        DeleteResult {
            deleted: r.deleted,
            prev: r.prev,
            log_index: r.log_index,
        }
    }
}

impl From<proto::ScanReply> for ScanResponse {
    fn from(r: proto::ScanReply) -> Self {
        ScanResponse {
            items: r
                .items
                .into_iter()
                .map(|kv| KeyValue {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            more: r.more,
        }
    }
}

impl From<proto::ApplyReply> for Applied {
    fn from(r: proto::ApplyReply) -> Self {
        Applied {
            response: r.response,
            log_index: r.log_index,
        }
    }
}

impl From<Applied> for proto::ApplyReply {
    fn from(a: Applied) -> Self {
        proto::ApplyReply {
            response: a.response,
            log_index: a.log_index,
        }
    }
}

impl From<PutResult> for proto::PutReply {
    fn from(p: PutResult) -> Self {
        proto::PutReply {
            prev: p.prev,
            log_index: p.log_index,
        }
    }
}

impl From<DeleteResult> for proto::DeleteReply {
    fn from(d: DeleteResult) -> Self {
        proto::DeleteReply {
            deleted: d.deleted,
            prev: d.prev,
            log_index: d.log_index,
        }
    }
}

impl From<ScanResponse> for proto::ScanReply {
    fn from(page: ScanResponse) -> Self {
        proto::ScanReply {
            items: page
                .items
                .into_iter()
                .map(|kv| proto::KeyValue {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            more: page.more,
        }
    }
}

impl From<SnapshotInfo> for proto::SnapshotReply {
    fn from(s: SnapshotInfo) -> Self {
        proto::SnapshotReply {
            index: s.index,
            term: s.term,
            size: s.size,
        }
    }
}

impl From<proto::UpgradeFsmReply> for ModuleUpgrade {
    fn from(r: proto::UpgradeFsmReply) -> Self {
        ModuleUpgrade {
            hash: r.hash,
            size: r.size,
            log_index: r.log_index,
            dry_run: r.dry_run,
        }
    }
}

impl From<ModuleUpgrade> for proto::UpgradeFsmReply {
    fn from(u: ModuleUpgrade) -> Self {
        proto::UpgradeFsmReply {
            hash: u.hash,
            size: u.size,
            log_index: u.log_index,
            dry_run: u.dry_run,
        }
    }
}

impl From<proto::Status> for Status {
    fn from(s: proto::Status) -> Self {
        let non_empty = |v: String| (!v.is_empty()).then_some(v);
        Status {
            id: s.id,
            address: s.address,
            state: s.state,
            leader_id: non_empty(s.leader_id),
            leader_address: non_empty(s.leader_address),
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            membership_index: s.membership_index,
            members: s
                .members
                .into_iter()
                .map(|m| MemberStatus {
                    id: m.id,
                    address: m.address,
                    voter: m.voter,
                    matched_index: m.matched_index,
                    lag: m.lag,
                })
                .collect(),
            fsm_module_hash: s.fsm_module_hash,
            fsm_module_size: s.fsm_module_size,
            fsm_module_since_index: s.fsm_module_since_index,
            fsm_modules: s
                .fsm_modules
                .into_iter()
                .map(|m| ModuleRecord {
                    hash: m.hash,
                    size: m.size,
                    since_index: m.since_index,
                })
                .collect(),
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            sessions: s.sessions,
            state_hash: s.state_hash.map(|h| StateHash {
                applied_index: h.applied_index,
                sha256: h.sha256,
            }),
            counters: s.counters.map(|c| Counters {
                commands_applied: c.commands_applied,
                queries_answered: c.queries_answered,
                apply_micros: c.apply_micros,
            }),
        }
    }
}

impl From<Status> for proto::Status {
    fn from(s: Status) -> Self {
        proto::Status {
            id: s.id,
            address: s.address,
            state: s.state,
            leader_id: s.leader_id.unwrap_or_default(),
            leader_address: s.leader_address.unwrap_or_default(),
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            membership_index: s.membership_index,
            members: s
                .members
                .into_iter()
                .map(|m| proto::Member {
                    id: m.id,
                    address: m.address,
                    voter: m.voter,
                    matched_index: m.matched_index,
                    lag: m.lag,
                })
                .collect(),
            fsm_module_hash: s.fsm_module_hash,
            fsm_module_size: s.fsm_module_size,
            fsm_module_since_index: s.fsm_module_since_index,
            fsm_modules: s
                .fsm_modules
                .into_iter()
                .map(|m| proto::FsmModule {
                    hash: m.hash,
                    size: m.size,
                    since_index: m.since_index,
                })
                .collect(),
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            sessions: s.sessions,
            state_hash: s.state_hash.map(|h| proto::StateHash {
                applied_index: h.applied_index,
                sha256: h.sha256,
            }),
            counters: s.counters.map(|c| proto::Counters {
                commands_applied: c.commands_applied,
                queries_answered: c.queries_answered,
                apply_micros: c.apply_micros,
            }),
        }
    }
}

impl From<SessionRef> for proto::Session {
    fn from(s: SessionRef) -> Self {
        proto::Session {
            client_id: s.client_id,
            seq: s.seq,
        }
    }
}

impl From<proto::Session> for SessionRef {
    fn from(s: proto::Session) -> Self {
        SessionRef {
            client_id: s.client_id,
            seq: s.seq,
        }
    }
}
