//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/test-tools.sh`) driven over the DevTools protocol loads `/ui` from a follower of a
//! 3-node cluster under writes, waits for live values, checks the DOM (three members, one
//! leader, a rising write count, replicas agreeing), kills the leader and sees the page name the
//! new one, and saves a screenshot under the test's output directory.

mod common;

use common::{http, three_nodes, wait_for, wait_for_leader, TestDir};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium with its profile in `profile` and attaches to its first page.
    async fn start(profile: &Path) -> Browser {
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                // Without these, Chromium dials out at start (the test machine has no network).
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,860",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium not found: scripts/test-tools.sh installs it");
        // Chromium writes the port it chose into its profile.
        let port_file = profile.join("DevToolsActivePort");
        let port = wait_for("Chromium's DevTools port", || async {
            let text = std::fs::read_to_string(&port_file).ok()?;
            text.lines().next()?.trim().parse::<u16>().ok()
        })
        .await;
        let list_url = format!("http://127.0.0.1:{port}/json/list");
        let page = wait_for("Chromium's first page", || async {
            let targets: Vec<Value> = reqwest::get(&list_url).await.ok()?.json().await.ok()?;
            targets
                .into_iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .expect("DevTools websocket");
        Browser {
            child,
            socket,
            next_id: 0,
        }
    }

    /// Sends one DevTools command and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(message))
            .await
            .expect("DevTools send");
        loop {
            let frame = self.socket.next().await.expect("DevTools closed");
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// A PNG of the page as it is shown.
    async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }
}

/// What the page shows: the leader's name, the member rows (name, role), writes so far, and
/// the replica agreement pill.
const READ_PAGE: &str = r##"JSON.stringify({
  leader: document.getElementById("leader").textContent,
  rows: [...document.querySelectorAll("#members tr")].map(r => [r.dataset.node, r.dataset.role]),
  writes: Number(document.getElementById("writes-total").textContent),
  hashes: document.getElementById("hashes").textContent,
  modules: document.querySelectorAll("#modules tr").length,
  events: document.querySelectorAll("#events li").length,
})"##;

async fn page(browser: &mut Browser) -> Value {
    let text = browser.eval(READ_PAGE).await;
    serde_json::from_str(text.as_str().unwrap_or("{}")).unwrap_or_default()
}

fn rows_with_role(view: &Value, role: &str) -> Vec<String> {
    view["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r[1] == role)
        .map(|r| r[0].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Where a test keeps files worth looking at after it ran.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_live_cluster_in_a_real_browser() {
    let dir = TestDir::new();
    let mut nodes = three_nodes(dir.path(), &[]).await;
    let l = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    common::put_many(&nodes[l], 0..50, 8).await;
    let f = (l + 1) % 3;
    let leader_name = nodes[l].name.clone();

    // The page is self-contained: one document, no other requests than its own API.
    let resp = reqwest::get(nodes[f].url("/ui")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external references"
    );
    println!("dashboard page weight: {} bytes", html.len());

    let mut browser = Browser::start(&dir.path().join("chromium")).await;
    browser.open(&nodes[f].url("/ui")).await;
    // Shared by the polling closures below.
    let browser = tokio::sync::Mutex::new(browser);
    let first = wait_for(
        "three members, one leader, state hashes compared",
        || async {
            let view = page(&mut *browser.lock().await).await;
            let ok = view["rows"].as_array().map(Vec::len) == Some(3)
                && rows_with_role(&view, "Leader") == [leader_name.clone()]
                && view["leader"] == leader_name.as_str()
                && view["hashes"] == "state hashes agree";
            ok.then_some(view)
        },
    )
    .await;
    assert_eq!(rows_with_role(&first, "Follower").len(), 2, "{first}");
    assert!(first["modules"].as_u64() >= Some(1), "{first}");
    assert!(first["events"].as_u64() >= Some(1), "{first}");
    let writes = first["writes"].as_u64().unwrap();

    // Writes all along from now on, through the third node.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, base) = (writing.clone(), nodes[3 - l - f].url("/v1/kv/"));
        tokio::spawn(async move {
            let client = http();
            let mut i = 0u64;
            while writing.load(Ordering::Relaxed) {
                let _ = client.put(format!("{base}w{i}")).body("v").send().await;
                i += 1;
            }
        })
    };
    wait_for("the write count to rise", || async {
        let view = page(&mut *browser.lock().await).await;
        (view["writes"].as_u64() > Some(writes)).then_some(())
    })
    .await;
    // A few seconds of rates on the chart before the picture.
    wait_for("ten points on the chart", || async {
        let points = browser
            .lock()
            .await
            .eval(r#"Number(document.getElementById("chart").dataset.points || 0)"#)
            .await;
        (points.as_u64() >= Some(10)).then_some(())
    })
    .await;
    std::fs::write(
        output_dir().join("dashboard.png"),
        browser.lock().await.screenshot().await,
    )
    .unwrap();

    // The leader dies: the page names the new one and shows the old one unreachable.
    nodes[l].kill();
    let after = wait_for("the page to show a new leader", || async {
        let view = page(&mut *browser.lock().await).await;
        let new_leader = rows_with_role(&view, "Leader");
        let ok = new_leader.len() == 1
            && new_leader[0] != leader_name
            && view["leader"] == new_leader[0].as_str()
            && rows_with_role(&view, "Unreachable") == [leader_name.clone()];
        ok.then_some(view)
    })
    .await;
    let shown = after["leader"].as_str().unwrap();
    let status = nodes[f].status().await.unwrap();
    assert_eq!(status.leader_id.as_deref(), Some(shown));
    std::fs::write(
        output_dir().join("dashboard-after-leader-kill.png"),
        browser.lock().await.screenshot().await,
    )
    .unwrap();
    writing.store(false, Ordering::Relaxed);
    let _ = writer.await;
}
