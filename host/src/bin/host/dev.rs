//! `host dev --fsm PATH`: a one-node cluster for developing a guest. It watches the wasm file;
//! each time the file changes (and has stopped changing), it checks the new component as `host
//! guest check` does and prints the verdict, then upgrades the running state machine through the
//! log, as `POST /v1/fsm` does, so the state migrates through the new guest's `restore`.

use crate::args::DevArgs;
use anyhow::{Context, Result};
use host::auth::Caller;
use host::check::{check, guest_kv_script, parse_script, Step};
use host::config::{FsmSource, NodeConfig};
use host::fsm::GuestModule;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(250);

/// The node's configuration: `--fsm`, bootstrapped, its data in `--data-dir` or a fresh
/// directory under the system's temporary directory.
pub fn config(args: &DevArgs) -> NodeConfig {
    let mut config = NodeConfig::new("dev");
    config.bootstrap = true;
    config.fsm = FsmSource::File(args.fsm.clone());
    config.network.address = args.address.clone();
    config.network.http_address = args.http.clone();
    config.storage.data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            let stamp = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            std::env::temp_dir().join(format!("raftwasm-dev-{}-{stamp}", std::process::id()))
        }
    };
    config
}

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `args.fsm` and upgrades `service`'s cluster to each new version, forever.
pub async fn watch(args: DevArgs, service: host::service::Service) -> Result<()> {
    let steps = match &args.commands {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_script(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => guest_kv_script(1_000, 1),
    };
    let mut seen = stamp(&args.fsm);
    loop {
        tokio::time::sleep(POLL).await;
        let now = stamp(&args.fsm);
        if now == seen || now.is_none() {
            continue;
        }
        // A build writes the file in several steps: wait until it stays the same for a poll.
        tokio::time::sleep(POLL).await;
        if stamp(&args.fsm) != now {
            continue;
        }
        seen = now;
        upgrade(&args.fsm, &steps, &service).await;
    }
}

async fn upgrade(path: &Path, steps: &[Step], service: &host::service::Service) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return println!("dev: cannot read {}: {e}", path.display()),
    };
    let name = path.display().to_string();
    let module = match GuestModule::from_bytes(&name, &bytes, Default::default()) {
        Ok(module) => module,
        Err(e) => return println!("dev: {e}; still running the previous version"),
    };
    let checked = {
        let (module, steps) = (module.clone(), steps.to_vec());
        tokio::task::spawn_blocking(move || check(&module, &steps)).await
    };
    match checked {
        Ok(Ok(report)) => println!("dev: check of {name}:\n{report}"),
        Ok(Err(e)) => println!("dev: the check could not run: {e}"),
        Err(e) => println!("dev: the check could not run: {e}"),
    }
    match service.upgrade_fsm(&Caller::open(0), bytes, false).await {
        Ok(done) => println!(
            "dev: upgraded to sha256:{} at log index {}",
            &done.hash[..12.min(done.hash.len())],
            done.log_index
        ),
        Err(e) => println!("dev: upgrade refused: {e}; still running the previous version"),
    }
}
