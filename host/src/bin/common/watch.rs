//! `kvclient --command watch --prefix P` (or `--key K`) `[--from R]`: prints every change guests
//! announce for the keys, one JSON line each, in order, until interrupted. A lost connection
//! is resumed from the last change printed (after `--retries` failed reconnections in a row it
//! gives up), so no change is missed or printed twice; a compacted start or a cut-off ends it
//! with the node's error. Progress notices go to standard error.

use anyhow::Result;
use host::proto;
use host::service::ChangeView;
use std::future::Future;
use std::time::Duration;

/// Where the watch is: the next request's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub start_revision: u64,
    pub start_after_seq: u32,
}

/// Watches `key` (a prefix when `prefix`) from revision `from` (0: new changes only), with a
/// fresh gRPC client from `connect` for each connection.
pub async fn watch_changes<C, F>(
    connect: C,
    key: String,
    prefix: bool,
    from: u64,
    retries: u32,
) -> Result<()>
where
    C: Fn() -> F,
    F: Future<Output = Result<super::Client>>,
{
    let mut at = Position {
        start_revision: from,
        start_after_seq: 0,
    };
    let mut failures = 0;
    loop {
        let request = proto::WatchKeysRequest {
            key: key.clone(),
            prefix,
            start_revision: at.start_revision,
            start_after_seq: at.start_after_seq,
            progress_ms: 0,
        };
        let stream = match connect().await {
            Ok(mut client) => client.watch_keys(request).await,
            Err(e) if failures < retries => {
                failures += 1;
                eprintln!("# reconnecting ({e:#})");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut stream = stream?.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(reply)) => {
                    failures = 0;
                    follow(&reply, &mut at)?;
                }
                Ok(None) => break,
                Err(status) if is_transport(&status) && failures < retries => break,
                Err(status) => return Err(status.into()),
            }
        }
        failures += 1;
        eprintln!("# stream lost; resuming at revision {}", at.start_revision);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints one reply and moves `at` past it.
fn follow(reply: &proto::WatchKeysReply, at: &mut Position) -> Result<()> {
    if reply.events.is_empty() {
        eprintln!("# progress: revision {} ({})", reply.revision, reply.node);
        *at = Position {
            start_revision: reply.revision + 1,
            start_after_seq: 0,
        };
        return Ok(());
    }
    for e in &reply.events {
        let view = ChangeView::of(&host::store::ChangeEvent {
            revision: e.revision,
            seq: e.seq,
            key: e.key.clone(),
            payload: e.payload.clone(),
        });
        println!("{}", serde_json::to_string(&view)?);
        *at = Position {
            start_revision: e.revision,
            start_after_seq: e.seq + 1,
        };
    }
    Ok(())
}

/// A broken connection or a node going away, as opposed to the node's own refusal.
fn is_transport(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && serde_json::from_slice::<host::service::ServiceError>(status.details()).is_err()
}
