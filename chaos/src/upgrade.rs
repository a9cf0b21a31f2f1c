//! The live guest upgrade a run may send in the middle of its faults: retried through every
//! node until one acknowledges it, and what came of it.

use crate::cluster::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened to the requested upgrade.
#[derive(Debug, Default)]
pub struct UpgradeOutcome {
    pub hash: String,
    pub acknowledged_at_s: Option<f64>,
    pub log_index: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The leader refused the module outright (a real problem, not a fault).
    pub refused: bool,
}

/// Sends the upgrade at `at`, through each node in turn, until one acknowledges it or `stop`.
pub async fn upgrade_during_faults(
    clients: Vec<Client>,
    module: Vec<u8>,
    at: Duration,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> UpgradeOutcome {
    let mut out = UpgradeOutcome {
        hash: host::fsm::module::module_hash(&module),
        ..UpgradeOutcome::default()
    };
    while start.elapsed() < at && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        out.attempts += 1;
        let mut req = tonic::Request::new(host::proto::UpgradeFsmRequest {
            module: module.clone(),
            dry_run: false,
        });
        req.set_timeout(Duration::from_secs(10));
        match clients[i % clients.len()].clone().upgrade_fsm(req).await {
            Ok(reply) => {
                out.acknowledged_at_s = Some(start.elapsed().as_secs_f64());
                out.log_index = reply.into_inner().log_index;
                eprintln!(
                    "upgrade   {:>8.3}s acknowledged at log index {} after {} attempt(s)",
                    start.elapsed().as_secs_f64(),
                    out.log_index,
                    out.attempts
                );
                return out;
            }
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    out.refused = true;
                    out.last_error = Some(status.message().to_string());
                    return out;
                }
                out.last_error = Some(status.message().to_string());
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}
