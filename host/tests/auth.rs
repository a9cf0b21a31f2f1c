//! Users and permissions (`--auth-file`), with real processes: each permission allowed and
//! refused over HTTP, gRPC and kvclient; anonymous upgrades refused; a wrong password answered
//! exactly as an unknown user; forwarded requests keep their caller; a forged forwarding header
//! or a client certificate does not make anyone an administrator; audit lines for membership
//! changes and upgrades.

mod common;

use common::certs::{flags, https, tls_channel, Ca};
use common::{wait_for, Node};
use host::auth::{hash_password, new_token, WithCredentials};
use host::proto::client_client::ClientClient;
use host::proto::{GetRequest, MonitorRequest, PutRequest, SnapshotRequest, UpgradeFsmRequest};
use std::path::{Path, PathBuf};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = ClientClient<InterceptedService<Channel, WithCredentials>>;

/// Users of every test here: `(name, password)`, and the token of `app`.
struct Users {
    path: PathBuf,
    token: String,
}

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const READER: (&str, &str) = ("reader", "reader-pw");
const WRITER: (&str, &str) = ("writer", "writer-pw");
const UPGRADER: (&str, &str) = ("upgrader", "upgrader-pw");

/// Writes the users file (TOML) to `dir`.
fn users(dir: &Path) -> Users {
    let (token, stored) = new_token().unwrap();
    let hash = |pw: &str| hash_password(pw).unwrap();
    let text = format!(
        r#"anonymous = []

[[users]]
name = "admin"
password = "{}"
permissions = ["read", "write", "admin", "upgrade"]

[[users]]
name = "reader"
password = "{}"
permissions = ["read"]

[[users]]
name = "writer"
password = "{}"
permissions = ["read", "write"]

[[users]]
name = "upgrader"
password = "{}"
permissions = ["upgrade"]

[[users]]
name = "app"
tokens = ["{stored}"]
certificate_names = ["app-client"]
permissions = ["read", "write"]
prefixes = ["app/"]
"#,
        hash(ADMIN.1),
        hash(READER.1),
        hash(WRITER.1),
        hash(UPGRADER.1),
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).unwrap();
    Users { path, token }
}

/// An HTTP request's status code and body.
async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.expect("HTTP request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// The `code` field of an error body.
fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("no code in {body:?}"))
}

fn client(channel: Channel, who: Option<(&str, &str)>) -> Client {
    let credentials = match who {
        Some((u, p)) => WithCredentials::from_flags(Some(u), Some(p), None).unwrap(),
        None => WithCredentials::default(),
    };
    ClientClient::with_interceptor(channel, credentials)
}

/// The gRPC code of a failed call (`None` when it succeeded).
fn code_of<T>(r: Result<T, tonic::Status>) -> Option<tonic::Code> {
    r.err().map(|s| s.code())
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        session: None,
        key: key.into(),
        value: "v".into(),
    }
}

#[tokio::test]
async fn each_permission_is_allowed_and_refused_over_http_grpc_and_kvclient() {
    let dir = tempfile::tempdir().unwrap();
    let users = users(dir.path());
    let auth = flags(&[("--auth-file", &users.path)]);
    let mut extra: Vec<&str> = auth.iter().map(String::as_str).collect();
    extra.extend(["--snapshot-every", "1000"]);
    let node = Node::start_with_env(
        dir.path(),
        "n1",
        true,
        &extra,
        &[("RUST_LOG", "warn,raftwasm::audit=info")],
    );
    let http = common::http();
    let url = |path: &str| node.url(path);
    let as_user = |req: reqwest::RequestBuilder, (u, p): (&str, &str)| req.basic_auth(u, Some(p));
    wait_for("the node to accept a write", || async {
        let (status, _) = send(as_user(http.put(url("/v1/kv/k")).body("v"), WRITER)).await;
        (status == 200).then_some(())
    })
    .await;

    // Anonymous: 401, with a challenge naming Basic.
    let resp = http.get(url("/v1/status")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    assert_eq!(code(&resp.text().await.unwrap()), "unauthenticated");

    // (request, who, expected status) for each permission, allowed and refused.
    let module = host::guests::GUEST_KV.to_vec();
    let cases: Vec<(reqwest::RequestBuilder, (&str, &str), u16)> = vec![
        (http.get(url("/v1/status")), READER, 200),
        (http.get(url("/v1/kv/k")), READER, 200),
        (http.get(url("/Get/k")), READER, 200),
        (http.put(url("/v1/kv/k")).body("x"), READER, 403),
        (http.get(url("/Put/k/x")), READER, 403),
        (http.post(url("/v1/apply")).body("{}"), READER, 403),
        (http.put(url("/v1/kv/k")).body("x"), WRITER, 200),
        (http.delete(url("/v1/kv/gone")), WRITER, 200),
        (http.post(url("/v1/snapshot")), WRITER, 403),
        (
            http.post(url("/v1/cluster/leader")).body(r#"{"id": "n1"}"#),
            WRITER,
            403,
        ),
        (
            http.post(url("/v1/fsm?dry_run=true")).body(module.clone()),
            WRITER,
            403,
        ),
        (http.post(url("/v1/snapshot")), ADMIN, 200),
        (
            http.post(url("/v1/cluster/leader")).body(r#"{"id": "n1"}"#),
            ADMIN,
            200,
        ),
        (
            http.post(url("/v1/fsm?dry_run=true")).body(module.clone()),
            UPGRADER,
            200,
        ),
        (http.get(url("/v1/status")), UPGRADER, 403),
        (http.get(url("/v1/status")), ("admin", "wrong"), 401),
        (http.get(url("/v1/debug/raft")), READER, 200),
        (http.get(url("/v1/debug/raft")), UPGRADER, 403),
    ];
    for (i, (req, who, expected)) in cases.into_iter().enumerate() {
        let (status, body) = send(as_user(req, who)).await;
        assert_eq!(status, expected, "case {i} as {}: {body}", who.0);
        if status == 403 {
            assert_eq!(code(&body), "permission_denied", "{body}");
            assert!(body.contains(who.0), "{body}");
        }
    }

    // An anonymous upgrade is refused, dry run or not, over HTTP and gRPC.
    for q in ["?dry_run=true", ""] {
        let (status, body) =
            send(http.post(url(&format!("/v1/fsm{q}"))).body(module.clone())).await;
        assert_eq!(status, 401, "{body}");
    }

    // A wrong password and an unknown user get the same answer, byte for byte.
    let wrong = send(as_user(http.get(url("/v1/status")), ("admin", "nope"))).await;
    let unknown = send(as_user(http.get(url("/v1/status")), ("nobody", "nope"))).await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown);
    assert!(
        !wrong.1.contains("nobody") && !wrong.1.contains("admin"),
        "{}",
        wrong.1
    );

    // Bearer token and key prefixes: `app` may touch app/ only, and no raw apply.
    let bearer = |req: reqwest::RequestBuilder| req.bearer_auth(&users.token);
    for (req, expected) in [
        (http.put(url("/v1/kv/app/1")).body("v"), 200),
        (http.get(url("/v1/kv/app/1")), 200),
        (http.get(url("/v1/kv?prefix=app/")), 200),
        (http.put(url("/v1/kv/other")).body("v"), 403),
        (http.get(url("/v1/kv")), 403),
        (http.post(url("/v1/apply")).body("{}"), 403),
        (http.post(url("/v1/query")).body("{}"), 403),
    ] {
        let (status, body) = send(bearer(req)).await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, _) = send(http.get(url("/v1/status")).bearer_auth("rwt_not-a-token")).await;
    assert_eq!(status, 401);

    // gRPC: the same rules through metadata.
    let channel = Channel::from_shared(format!("http://{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let get = || GetRequest {
        key: "k".into(),
        ..Default::default()
    };
    let mut anonymous = client(channel.clone(), None);
    assert_eq!(
        code_of(anonymous.get(get()).await),
        Some(tonic::Code::Unauthenticated)
    );
    let dry_run = UpgradeFsmRequest {
        module: module.clone(),
        dry_run: true,
    };
    assert_eq!(
        code_of(anonymous.upgrade_fsm(dry_run.clone()).await),
        Some(tonic::Code::Unauthenticated)
    );
    let mut reader = client(channel.clone(), Some(READER));
    assert!(reader.get(get()).await.is_ok());
    assert!(reader.monitor(MonitorRequest::default()).await.is_ok());
    let refused = reader.put(put("k")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("write"), "{}", refused.message());
    assert_eq!(
        code_of(reader.snapshot(SnapshotRequest {}).await),
        Some(tonic::Code::PermissionDenied)
    );
    let mut upgrader = client(channel.clone(), Some(UPGRADER));
    assert!(upgrader.upgrade_fsm(dry_run).await.is_ok());
    // A forged forwarding header from a connection without a node certificate counts for
    // nothing: the caller stays anonymous.
    let mut forged = tonic::Request::new(put("k"));
    forged
        .metadata_mut()
        .insert("x-raftwasm-user", "admin".parse().unwrap());
    assert_eq!(
        code_of(ClientClient::new(channel.clone()).put(forged).await),
        Some(tonic::Code::Unauthenticated)
    );

    // kvclient: --user/--password and --token.
    let kv = |args: &[&str]| common::kvclient(&node.grpc, args);
    let (ok, _, err) = kv(&[
        "--user",
        "writer",
        "--password",
        "writer-pw",
        "--command",
        "set",
        "--key",
        "k3",
        "--val",
        "v3",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = kv(&[
        "--user",
        "writer",
        "--password",
        "bad",
        "--command",
        "get",
        "--key",
        "k3",
    ]);
    assert!(
        !ok && err.contains("invalid user name or password"),
        "{err}"
    );
    let (ok, out, err) = kv(&[
        "--token",
        &users.token,
        "--command",
        "get",
        "--key",
        "app/1",
    ]);
    assert!(ok && out == "v", "{out} {err}");
    let (ok, _, err) = kv(&["--command", "get", "--key", "k3"]);
    assert!(!ok && err.contains("authentication required"), "{err}");

    // A real upgrade, by the upgrader: one audit line naming who, what and the log index.
    let v2 = std::fs::read(env!("RAFTWASM_GUEST_KV_V2_WASM")).unwrap();
    let (status, body) = send(as_user(http.post(url("/v1/fsm")).body(v2), UPGRADER)).await;
    assert_eq!(status, 200, "{body}");
    let index = serde_json::from_str::<serde_json::Value>(&body).unwrap()["log_index"]
        .as_u64()
        .unwrap();
    let line = wait_for("the upgrade's audit line", || async {
        node.log()
            .lines()
            .find(|l| l.contains("raftwasm::audit") && l.contains("upgrade the module"))
            .map(str::to_string)
    })
    .await;
    assert!(line.contains("user=\"upgrader\""), "{line}");
    assert!(line.contains(&format!("log_index={index}")), "{line}");
}

/// A node of a TLS cluster with authentication: certificates for 127.0.0.1 from `ca`, which
/// also signs client and node certificates.
fn secure_node(root: &Path, name: &str, ca: &Ca, users: &Users, bootstrap: bool) -> Node {
    let (cert, key) = ca.leaf(name, &["localhost", "127.0.0.1"]).write(root, name);
    let ca_file = root.join("ca.pem");
    let args = flags(&[
        ("--tls-cert", &cert),
        ("--tls-key", &key),
        ("--peer-ca", &ca_file),
        ("--tls-client-ca", &ca_file),
        ("--auth-file", &users.path),
    ]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--snapshot-every", "1000"]);
    Node::start_with_env(
        root,
        name,
        bootstrap,
        &args,
        &[("RUST_LOG", "warn,raftwasm::audit=info")],
    )
}

/// A node's status over HTTPS as `admin`, if it answers.
async fn status(http: &reqwest::Client, node: &Node) -> Option<serde_json::Value> {
    let resp = http
        .get(format!("https://{}/v1/status", node.http))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

#[tokio::test]
async fn forwarded_requests_keep_their_caller_and_certificates_map_to_users() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let users = users(root);
    let ca = Ca::new("cluster CA");
    ca.write(root, "ca");
    // Clients present certificates too (--tls-client-ca): one that maps to no user, and
    // `app-client`, which the users file gives to `app`.
    let nobody = ca.leaf("some-client", &[]);
    let app_cert = ca.leaf("app-client", &[]);
    let http = https(&[&ca], Some(&nobody));
    let n1 = secure_node(root, "n1", &ca, &users, true);
    wait_for("n1 to lead", || async {
        let s = status(&http, &n1).await?;
        (s["leader_id"] == "n1").then_some(())
    })
    .await;

    // Membership needs admin; the new node checks the prober's credentials as well.
    let mut others = Vec::new();
    for name in ["n2", "n3"] {
        let node = secure_node(root, name, &ca, &users, false);
        let add = |who: (&str, &str)| {
            http.post(format!("https://{}/v1/cluster/nodes", n1.http))
                .basic_auth(who.0, Some(who.1))
                .json(&serde_json::json!({"id": name, "address": node.grpc}))
        };
        let (status, body) = send(add(WRITER)).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = send(add(ADMIN)).await;
        assert_eq!(status, 200, "{body}");
        others.push(node);
    }
    let audit: Vec<String> = n1
        .log()
        .lines()
        .filter(|l| l.contains("raftwasm::audit"))
        .map(str::to_string)
        .collect();
    for what in [
        "add learner n2",
        "promote n2 to voter",
        "add learner n3",
        "promote n3 to voter",
    ] {
        let line = audit.iter().find(|l| l.contains(what));
        let line = line.unwrap_or_else(|| panic!("no audit line for {what}: {audit:#?}"));
        assert!(
            line.contains("user=\"admin\"") && line.contains("log_index="),
            "{line}"
        );
    }

    // Through a follower over HTTPS: the leader sees the same caller.
    let follower = &others[0];
    let via = |path: &str| format!("https://{}{path}", follower.http);
    let (status, body) = send(
        http.put(via("/v1/kv/k"))
            .basic_auth(WRITER.0, Some(WRITER.1))
            .body("v"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        http.put(via("/v1/kv/k"))
            .basic_auth(READER.0, Some(READER.1))
            .body("v"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(http.post(via("/v1/snapshot")).bearer_auth(&users.token)).await;
    assert_eq!(status, 403, "{body}");

    // A client certificate names its user: `app-client` is `app`, through a follower too.
    let mut app = client(
        tls_channel(follower, &ca, Some(&app_cert)).await.unwrap(),
        None,
    );
    app.put(put("app/1")).await.unwrap();
    let refused = app.put(put("other")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Claiming to forward for admin changes nothing for a client certificate: it is not a
    // node's (it names no member's address).
    let mut claim = tonic::Request::new(SnapshotRequest {});
    claim
        .metadata_mut()
        .insert("x-raftwasm-user", "admin".parse().unwrap());
    let refused = app.snapshot(claim).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut anonymous = client(tls_channel(&n1, &ca, Some(&nobody)).await.unwrap(), None);
    let mut claim = tonic::Request::new(put("k"));
    claim
        .metadata_mut()
        .insert("x-raftwasm-user", "admin".parse().unwrap());
    let refused = anonymous.put(claim).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}
