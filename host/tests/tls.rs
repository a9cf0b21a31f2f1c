//! TLS for clients, with real processes and real certificates: the gRPC and HTTP listeners
//! speak TLS with `--tls-cert/--tls-key`, demand a client certificate with `--tls-client-ca`,
//! and take new certificates on file change and on SIGHUP without a restart or a lost request.

mod common;

use common::certs::{flags, grpc, https, Ca, Leaf};
use common::{wait_for, Node};
use host::proto::client_client::ClientClient;
use host::proto::{GetRequest, PutRequest};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A fresh HTTPS client's response from `url` (trusting `cas`, no certificate), if any.
fn served(
    cas: &[&Ca],
    url: String,
) -> impl std::future::Future<Output = Option<reqwest::Response>> {
    let client = https(cas, None);
    async move { client.get(url).send().await.ok() }
}

async fn put(
    client: &mut ClientClient<tonic::transport::Channel>,
    key: &str,
    value: &str,
) -> Result<(), tonic::Status> {
    client
        .put(PutRequest {
            session: None,
            key: key.into(),
            value: value.into(),
        })
        .await
        .map(|_| ())
}

fn tls_node(root: &Path, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Node {
    let peer_ca = root.join("peer-ca.pem");
    let mut extra = flags(&[
        ("--tls-cert", cert),
        ("--tls-key", key),
        ("--peer-ca", &peer_ca),
    ]);
    if let Some(ca) = client_ca {
        extra.extend(flags(&[("--tls-client-ca", ca)]));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Node::start(root, "n1", true, &extra)
}

#[tokio::test]
async fn clients_need_tls_and_a_certificate_the_node_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (Ca::new("cluster CA"), Ca::new("someone else's CA"));
    let (cert, key) = ca
        .leaf("n1", &["localhost", "127.0.0.1"])
        .write(dir.path(), "n1");
    let client_ca = ca.write(dir.path(), "ca");
    ca.write(dir.path(), "peer-ca");
    let node = tls_node(dir.path(), &cert, &key, Some(&client_ca));
    let alice = ca.leaf("alice", &["alice"]);
    let mallory = other_ca.leaf("mallory", &["mallory"]);
    let status = format!("https://{}/v1/status", node.http);

    // A trusted client certificate over HTTPS and over gRPC.
    let ok = wait_for("the HTTPS gateway", || async {
        https(&[&ca], Some(&alice)).get(&status).send().await.ok()
    })
    .await;
    assert_eq!(ok.status(), 200);
    let mut client = grpc(&node, &ca, Some(&alice)).await.unwrap();
    wait_for("a write over gRPC+TLS", || async {
        put(&mut client.clone(), "k", "v").await.ok()
    })
    .await;
    let got = client
        .get(GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, "v");

    // Refused: plain HTTP, no client certificate, a certificate from another CA, a client
    // that does not trust the node's certificate.
    let plain = common::http()
        .get(format!("http://{}/v1/status", node.http))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    assert!(https(&[&ca], None).get(&status).send().await.is_err());
    assert!(https(&[&ca], Some(&mallory))
        .get(&status)
        .send()
        .await
        .is_err());
    assert!(https(&[&other_ca], Some(&alice))
        .get(&status)
        .send()
        .await
        .is_err());
    let anonymous = match grpc(&node, &ca, None).await {
        Ok(mut c) => put(&mut c, "k", "anonymous").await.is_err(),
        Err(_) => true,
    };
    assert!(anonymous, "a gRPC client without a certificate was served");
    let forged = match grpc(&node, &ca, Some(&mallory)).await {
        Ok(mut c) => put(&mut c, "k", "forged").await.is_err(),
        Err(_) => true,
    };
    assert!(
        forged,
        "a gRPC client with another CA's certificate was served"
    );
    assert!(plain_grpc_refused(&node).await);

    // kvclient over TLS, with and without its certificate.
    let (alice_cert, alice_key) = alice.write(dir.path(), "alice");
    let tls_args = flags(&[
        ("--ca", &client_ca),
        ("--cert", &alice_cert),
        ("--cert-key", &alice_key),
    ]);
    let with = |extra: &[&'static str]| -> Vec<String> {
        tls_args
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::kvclient(&node.grpc, &args)
    };
    let (ok, _, err) = run(with(&["--command", "set", "--key", "k2", "--val", "v2"]));
    assert!(ok, "{err}");
    let (ok, out, err) = run(with(&["--command", "get", "--key", "k2"]));
    assert!(ok && out.contains("v2"), "{out} {err}");
    let ca_only = [
        "--ca",
        tls_args[1].as_str(),
        "--command",
        "get",
        "--key",
        "k2",
    ];
    let (ok, _, _) = common::kvclient(&node.grpc, &ca_only);
    assert!(!ok, "kvclient without a certificate was served");
}

async fn plain_grpc_refused(node: &Node) -> bool {
    match ClientClient::connect(format!("http://{}", node.grpc)).await {
        Ok(mut c) => put(&mut c, "k", "plain").await.is_err(),
        Err(_) => true,
    }
}

#[tokio::test]
async fn certificates_reload_on_file_change_and_on_sighup_without_losing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Ca::new("first CA"), Ca::new("second CA"));
    let names = ["localhost", "127.0.0.1"];
    let (cert, key) = first.leaf("n1", &names).write(dir.path(), "n1");
    first.write(dir.path(), "peer-ca");
    let node = tls_node(dir.path(), &cert, &key, None);
    let url = |path: &str| format!("https://{}{}", node.http, path);

    // Writers that trust both CAs run throughout, each on its own connections.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    wait_for("the HTTPS gateway", || served(&[&first], url("/v1/status"))).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = https(&[&first, &second], None);
            let (stop, done, failed, url) = (stop.clone(), done.clone(), failed.clone(), url(""));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let put = client.get(format!("{url}/Put/w{w}-{i}/x")).send().await;
                    match put {
                        Ok(r) if r.status().is_success() => done.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    wait_for("writes before the rotations", || async {
        (done.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;

    // File change: the node serves the second CA's certificate without a restart.
    second.leaf("n1", &names).write(dir.path(), "n1");
    wait_for("the second certificate (file change)", || {
        served(&[&second], url("/v1/status"))
    })
    .await;
    assert!(served(&[&first], url("/v1/status")).await.is_none());

    // SIGHUP: files replaced with their modification times kept, so only the signal can tell
    // the node.
    first
        .leaf("n1", &names)
        .write_keeping_mtimes(dir.path(), "n1");
    assert!(served(&[&first], url("/v1/status")).await.is_none());
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the first certificate again (SIGHUP)", || {
        served(&[&first], url("/v1/status"))
    })
    .await;

    // Traffic went on throughout.
    let settled = done.load(Ordering::SeqCst);
    wait_for("writes after the rotations", || async {
        (done.load(Ordering::SeqCst) > settled + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
}

/// A TLS node with its gRPC port at `ip` (a loopback address of its own, so certificates can
/// tell nodes apart) whose certificate `ca` signed for `san` (and 127.0.0.1, where its HTTP
/// gateway listens).
fn peer_node(root: &Path, name: &str, ip: &str, san: &str, ca: &Ca, bootstrap: bool) -> Node {
    let (cert, key) = ca.leaf(name, &[san, "127.0.0.1"]).write(root, name);
    let peer_ca = root.join("peer-ca.pem");
    let args = flags(&[
        ("--tls-cert", &cert),
        ("--tls-key", &key),
        ("--peer-ca", &peer_ca),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_bound(root, name, bootstrap, &args, &format!("{ip}:0"))
}

/// `POST /v1/cluster/nodes` on `via` over HTTPS: the status and body.
async fn add_node(client: &reqwest::Client, via: &Node, node: &Node) -> (u16, String) {
    let resp = client
        .post(format!("https://{}/v1/cluster/nodes", via.http))
        .json(&serde_json::json!({"id": node.name, "address": node.grpc}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// A raw `Raft` service client on `node`, presenting `identity` if given.
async fn raft_rpc(
    node: &Node,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> host::proto::raft_client::RaftClient<tonic::transport::Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    let channel = Endpoint::from_shared(format!("https://{}", node.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    host::proto::raft_client::RaftClient::new(channel)
}

/// A vote request from node `name` (what a candidate sends).
fn vote_from(name: &str) -> host::proto::RaftMessage {
    let vote = host::types::Vote::new(1_000, host::types::node_id(name));
    let request = openraft::raft::VoteRequest::<host::types::TypeConfig>::new(vote, None);
    host::proto::RaftMessage {
        payload: bincode::serialize(&request).unwrap(),
    }
}

#[tokio::test]
async fn nodes_speak_mutual_tls_and_the_raft_service_admits_only_their_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (ca, other_ca) = (Ca::new("cluster CA"), Ca::new("someone else's CA"));
    ca.write(root, "peer-ca");
    let n1 = peer_node(root, "n1", "127.0.0.2", "127.0.0.2", &ca, true);
    let n2 = peer_node(root, "n2", "127.0.0.3", "127.0.0.3", &ca, false);
    let n3 = peer_node(root, "n3", "127.0.0.4", "127.0.0.4", &ca, false);
    let client = https(&[&ca], None);
    wait_for("n1 over HTTPS", || async {
        client
            .get(format!("https://{}/v1/status", n1.http))
            .send()
            .await
            .ok()
    })
    .await;

    // The cluster forms over TLS, and writes are forwarded between nodes over it.
    for node in [&n2, &n3] {
        let (status, body) = add_node(&client, &n1, node).await;
        assert_eq!(status, 200, "{body}");
    }
    let put = client
        .put(format!("https://{}/v1/kv/greeting", n2.http))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        200,
        "{}",
        put.text().await.unwrap_or_default()
    );
    let got = wait_for("the write on n3", || async {
        let r = client
            .get(format!(
                "https://{}/v1/kv/greeting?consistency=stale",
                n3.http
            ))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(r.text().await.ok()?)
    })
    .await;
    assert!(got.contains("hello"), "{got}");

    // Cannot join: a node whose certificate another CA signed, and a node whose certificate
    // names another address than the one it claims.
    let stranger = peer_node(root, "n4", "127.0.0.5", "127.0.0.5", &other_ca, false);
    let (status, body) = add_node(&client, &n1, &stranger).await;
    assert!(
        status >= 400,
        "a node with another CA's certificate joined: {body}"
    );
    let liar = peer_node(root, "n5", "127.0.0.6", "127.0.0.9", &ca, false);
    let (status, body) = add_node(&client, &n1, &liar).await;
    assert!(
        status >= 400,
        "a node whose certificate names another address joined: {body}"
    );

    // The Raft service: no certificate, another CA's, a client certificate of the cluster's
    // CA that names no member, and n2's certificate speaking for n1 are all refused.
    let campaign = || host::proto::RaftMessage {
        payload: Vec::new(),
    };
    let err = raft_rpc(&n1, &ca, None)
        .await
        .campaign(campaign())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let alice = ca.leaf("alice", &["alice.example"]);
    let err = raft_rpc(&n1, &ca, Some(&alice))
        .await
        .campaign(campaign())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = raft_rpc(&n1, &ca, Some(&alice))
        .await
        .vote(vote_from("n2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let n2_cert = ca.leaf("n2", &["127.0.0.3"]);
    let err = raft_rpc(&n1, &ca, Some(&n2_cert))
        .await
        .vote(vote_from("n3"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mallory = other_ca.leaf("n2", &["127.0.0.3"]);
    let refused = match Endpoint::from_shared(format!("https://{}", n1.grpc))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.pem))
                .identity(Identity::from_pem(&mallory.cert, &mallory.key)),
        )
        .unwrap()
        .connect()
        .await
    {
        Ok(ch) => host::proto::raft_client::RaftClient::new(ch)
            .vote(vote_from("n2"))
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "another CA's certificate reached the Raft service");
    // n2's own certificate speaking for n2 is a node's call, and is answered.
    raft_rpc(&n1, &ca, Some(&n2_cert))
        .await
        .vote(vote_from("n2"))
        .await
        .unwrap();
}
