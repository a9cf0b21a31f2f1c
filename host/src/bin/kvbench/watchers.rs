//! kvbench's watchers: streams that follow every change while the load runs and count what
//! they receive, so a run reports the events a node delivers and what watching costs the
//! writes. raftwasm's `WatchKeys` carries each key's new and previous value (guest-kv announces
//! both); etcd's `Watch` is asked for the same (`prev_kv`).

use anyhow::{Context, Result};
use host::auth::WithCredentials;
use host::proto::etcd::{self, watch_client::WatchClient, watch_request::RequestUnion};
use host::proto::{self, client_client::ClientClient};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A watch stream, by target.
pub enum Watcher {
    Raftwasm(ClientClient<InterceptedService<Channel, WithCredentials>>),
    Etcd(WatchClient<Channel>),
}

/// Running watchers and what each has received.
pub struct Watchers {
    received: Vec<Arc<AtomicU64>>,
    tasks: Vec<JoinHandle<()>>,
    /// The first error a watcher ended with.
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl Watchers {
    /// Opens every watch (of every key, from now on) and waits until each is in place.
    pub async fn start(watchers: Vec<Watcher>) -> Result<Watchers> {
        let mut out = Watchers {
            received: Vec::new(),
            tasks: Vec::new(),
            failed: Arc::default(),
        };
        for w in watchers {
            let count = Arc::new(AtomicU64::new(0));
            let stream = open(w).await?;
            let (c, failed) = (count.clone(), out.failed.clone());
            out.tasks.push(tokio::spawn(async move {
                if let Err(e) = drain(stream, &c).await {
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            }));
            out.received.push(count);
        }
        Ok(out)
    }

    /// Events received so far, per watcher.
    pub fn received(&self) -> Vec<u64> {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Events each watcher received between `from` and `to` (waits until `to`).
    pub async fn received_between(&self, from: Instant, to: Instant) -> Vec<u64> {
        tokio::time::sleep_until(from.into()).await;
        let before = self.received();
        tokio::time::sleep_until(to.into()).await;
        let after = self.received();
        after.iter().zip(&before).map(|(a, b)| a - b).collect()
    }

    /// Why a watcher stopped early, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Stream {
    Raftwasm(tonic::Streaming<proto::WatchKeysReply>),
    // The request side stays open (a closed one ends etcd's watch).
    Etcd(tonic::Streaming<etcd::WatchResponse>),
}

async fn open(w: Watcher) -> Result<Stream> {
    match w {
        Watcher::Raftwasm(mut c) => {
            let request = proto::WatchKeysRequest {
                key: String::new(),
                prefix: true,
                ..Default::default()
            };
            let stream = c.watch_keys(request).await.context("opening a watch")?;
            Ok(Stream::Raftwasm(stream.into_inner()))
        }
        Watcher::Etcd(mut c) => {
            let create = etcd::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(etcd::WatchCreateRequest {
                    // From "\0" to "\0": every key.
                    key: vec![0],
                    range_end: vec![0],
                    prev_kv: true,
                    ..Default::default()
                })),
            };
            let requests = futures::StreamExt::chain(
                futures::stream::iter([create]),
                futures::stream::pending(),
            );
            let mut stream = c
                .watch(requests)
                .await
                .context("opening a watch")?
                .into_inner();
            // The first answer says the watch is in place.
            match stream.message().await.context("opening a watch")? {
                Some(r) if r.created => Ok(Stream::Etcd(stream)),
                other => anyhow::bail!("etcd did not create the watch: {other:?}"),
            }
        }
    }
}

async fn drain(stream: Stream, count: &AtomicU64) -> Result<(), String> {
    match stream {
        Stream::Raftwasm(mut s) => loop {
            match s.message().await {
                Ok(Some(r)) => count.fetch_add(r.events.len() as u64, Ordering::Relaxed),
                Ok(None) => return Err("the node ended the watch".into()),
                Err(e) => return Err(e.message().to_string()),
            };
        },
        Stream::Etcd(mut s) => loop {
            match s.message().await {
                Ok(Some(r)) if r.canceled => return Err(format!("canceled: {}", r.cancel_reason)),
                Ok(Some(r)) => count.fetch_add(r.events.len() as u64, Ordering::Relaxed),
                Ok(None) => return Err("etcd ended the watch".into()),
                Err(e) => return Err(e.message().to_string()),
            };
        },
    }
}
