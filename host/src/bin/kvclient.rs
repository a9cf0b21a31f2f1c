//! `kvclient`: the command-line gRPC client.
//!
//! `kvclient --server localhost:10001 --command set --key k --val v`, then
//! `kvclient --command get --key k`. Commands: monitor, status, watch (the node's view; with
//! `--prefix P` or `--key K` and `--from R`, the keys' changes), addnode, remove, transfer,
//! set, get, delete, scan, apply and query (any guest: `--data` or `--data-file`), snapshot,
//! backup (`--out FILE`), upgrade (`--fsm new.wasm [--dry-run]`). Any node will do: writes,
//! upgrades and membership changes are forwarded to the leader. `--ca` (and `--cert`,
//! `--cert-key`) speak TLS; `--user`/`--password` or `--token` authenticate.
//!
//! JSON answers (status, watch, scan) are one line each, pretty-printed only on a terminal.
//! Exit status: 0 done (found), 1 not found (get or delete of a missing key, an unknown node),
//! 2 any other error.
//!
//! `set` and `delete` run in a client session: a write that failed without being applied, or
//! whose outcome is unknown, is retried (`--retries`) with the same session and sequence number
//! (at the leader the error names), and the cluster applies it once.

#[path = "common/backup.rs"]
mod backup;
#[path = "common/connection.rs"]
mod connection;
#[path = "common/retry.rs"]
mod retry;
#[path = "common/watch.rs"]
mod watch;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use connection::ConnectionArgs;
use host::auth::WithCredentials;
use host::proto::{self, client_client::ClientClient, Consistency};
use host::service::{ServiceError, Status};
use std::io::IsTerminal;
use tonic::service::interceptor::InterceptedService;

const DEFAULT_SERVER: &str = "localhost:10001";

/// A gRPC client that sends the command line's credentials with every call.
type Client = ClientClient<InterceptedService<tonic::transport::Channel, WithCredentials>>;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Command {
    /// This node's view of the cluster (JSON).
    Monitor,
    /// Same as monitor.
    Status,
    /// With --prefix or --key: print every change to those keys from --from (JSON lines),
    /// resuming after a lost connection, until interrupted. Without: print the node's view
    /// each time it changes.
    Watch,
    /// Add node --id at --address (learner, catch up, then voter).
    Addnode,
    /// Remove node --id (the leader hands leadership over first).
    Remove,
    /// Make voter --id the leader.
    Transfer,
    /// Set --key to --val.
    Set,
    /// Print the value of --key.
    Get,
    /// Delete --key.
    Delete,
    /// List keys in order: with --prefix, or from --start (inclusive) to --end (exclusive);
    /// at most --limit (JSON: items and whether there are more).
    Scan,
    /// Send the guest a command through the log (--data or --data-file); prints its response.
    Apply,
    /// Ask the guest a read-only question (--data or --data-file); prints its answer.
    Query,
    /// Build a snapshot on the --server node now.
    Snapshot,
    /// Save a consistent copy of the whole replicated state to --out (from the leader; restore
    /// it with `host restore`).
    Backup,
    /// Replace the guest module with --fsm, through the log (validated first; --dry-run only validates).
    Upgrade,
}

/// gRPC client for a raftwasm cluster.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Any node's gRPC address.
    #[arg(long, env = "RAFTWASM_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    #[arg(long, value_enum)]
    command: Command,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    val: Option<String>,
    /// Node id, for addnode and remove.
    #[arg(long)]
    id: Option<String>,
    /// Node gRPC address, for addnode.
    #[arg(long)]
    address: Option<String>,
    /// Add as a non-voting learner only (addnode).
    #[arg(long)]
    learner: bool,
    /// Key prefix, for scan and watch.
    #[arg(long)]
    prefix: Option<String>,
    /// First revision a watch prints (0: only changes from now on).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// First key, for scan.
    #[arg(long)]
    start: Option<String>,
    /// End key (exclusive), for scan.
    #[arg(long)]
    end: Option<String>,
    /// Most keys a scan lists (0: the node's default).
    #[arg(long, default_value_t = 0)]
    limit: u32,
    /// The command (apply) or request (query) for the guest, as text.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// A file holding the command or request, `-` for standard input.
    #[arg(long)]
    data_file: Option<std::path::PathBuf>,
    /// Where backup writes the backup file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Read this node's state without a linearizability check (get, scan, query).
    #[arg(long)]
    stale: bool,
    /// Include a SHA-256 of the guest's full state (monitor, status).
    #[arg(long)]
    state_hash: bool,
    /// The new guest component, for upgrade.
    #[arg(long)]
    fsm: Option<std::path::PathBuf>,
    /// Validate the module (compile, exports, restore of the current state) without logging it.
    #[arg(long)]
    dry_run: bool,
    /// Retries of a set or delete that failed without being applied, or with an unknown
    /// outcome (0: none).
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Time allowed for each attempt of a set or delete, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Send set and delete outside a client session (one write fewer; a write whose outcome is
    /// unknown is then not retried, since a retry could apply it twice).
    #[arg(long)]
    no_session: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// A client of `server` over plain TCP, or over TLS with --ca (and --cert/--cert-key).
async fn connect(args: &Args, server: &str) -> Result<Client> {
    let c = &args.connection;
    let tls = host::tls::cli_client(c.ca.as_deref(), c.cert.as_deref(), c.cert_key.as_deref())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{server}"))
        .with_context(|| format!("bad server address {server}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    // Replies may carry a guest's large values (a get, a watch's change): up to the node's
    // own limits, not tonic's default 4 MiB.
    Ok(ClientClient::with_interceptor(channel, c.credentials()?)
        .max_decoding_message_size(MAX_REPLY_BYTES))
}

/// The largest reply kvclient reads: a change may be 32 MiB (the most a command announces).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// Runs write `call` (in a session or not), retrying as [`retry::after`] says, on a new
/// connection each time, to the leader an error names.
async fn write<T, F, Fut>(args: &Args, in_session: bool, mut call: F) -> Result<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut server = args.server.clone();
    let mut attempt = 0;
    loop {
        let limit = std::time::Duration::from_millis(args.timeout_ms);
        let failure = match connect(args, &server).await {
            Ok(client) => {
                let status = match tokio::time::timeout(limit, call(client)).await {
                    Ok(Ok(done)) => return Ok(done),
                    Ok(Err(status)) => status,
                    Err(_) => tonic::Status::deadline_exceeded(format!("no answer in {limit:?}")),
                };
                match retry::after(&status, in_session) {
                    // With a hint, at the leader; without one, back where we started.
                    retry::Retry::Again { leader } if attempt < args.retries => {
                        server = leader.unwrap_or_else(|| args.server.clone());
                        ServiceError::from_status(&status).to_string()
                    }
                    _ => return Err(status.into()),
                }
            }
            Err(e) if attempt < args.retries => format!("{e:#}"),
            Err(e) => return Err(e),
        };
        attempt += 1;
        eprintln!(
            "retrying ({attempt}/{}) at {server}: {failure}",
            args.retries
        );
        tokio::time::sleep(retry::backoff(attempt)).await;
    }
}

/// A new session's first place, unless --no-session.
async fn session(args: &Args) -> Result<Option<proto::Session>> {
    if args.no_session {
        return Ok(None);
    }
    // A retried open may leave an unused session behind; it expires.
    let opened = write(args, true, |mut c| async move {
        c.open_session(proto::OpenSessionRequest {}).await
    })
    .await?;
    Ok(Some(proto::Session {
        client_id: opened.into_inner().client_id,
        seq: 1,
    }))
}

fn need(v: Option<String>, flag: &str) -> Result<String> {
    v.with_context(|| format!("this command needs {flag}"))
}

/// Prints `value` as JSON: pretty for a person at a terminal, one line for a program.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = match std::io::stdout().is_terminal() {
        true => serde_json::to_string_pretty(value)?,
        false => serde_json::to_string(value)?,
    };
    println!("{text}");
    Ok(())
}

fn print_status(s: proto::Status) -> Result<()> {
    print_json(&Status::from(s))
}

/// A key or node that does not exist: exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        // A gRPC error carries the node's ServiceError; print that, not the transport wrapper.
        let not_found = match e.downcast_ref::<tonic::Status>() {
            Some(status) => {
                let error = ServiceError::from_status(status);
                eprintln!("error: {error}");
                matches!(error, ServiceError::NotFound { .. })
            }
            None => {
                eprintln!("error: {e:#}");
                e.downcast_ref::<NotFound>().is_some()
            }
        };
        std::process::exit(if not_found { 1 } else { 2 });
    }
}

async fn run(args: Args) -> Result<()> {
    // Writes make their own connections, one per attempt.
    if matches!(args.command, Command::Set | Command::Delete) {
        return write_command(&args).await;
    }
    let mut client = connect(&args, &args.server).await?;
    let consistency = if args.stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    };
    match args.command {
        Command::Monitor | Command::Status => {
            let request = proto::MonitorRequest {
                state_hash: args.state_hash,
                ..Default::default()
            };
            print_status(client.monitor(request).await?.into_inner())?
        }
        Command::Upgrade => {
            let path = args.fsm.context("this command needs --fsm")?;
            upgrade(&mut client, &path, args.dry_run).await?
        }
        Command::Snapshot => snapshot(&mut client).await?,
        Command::Backup => {
            let out = args.out.as_deref().context("this command needs --out")?;
            let chunks = client.backup(proto::BackupRequest {}).await?.into_inner();
            backup::save(chunks, out).await?
        }
        Command::Scan => {
            let request = proto::ScanRequest {
                prefix: args.prefix.unwrap_or_default(),
                start: args.start.unwrap_or_default(),
                end: args.end.unwrap_or_default(),
                limit: args.limit,
                consistency: consistency.into(),
            };
            let reply = client.scan(request).await?.into_inner();
            print_json(&host::service::ScanResponse::from(reply))?
        }
        Command::Apply => {
            let command = guest_input(&args)?;
            let request = proto::ApplyRequest {
                command,
                session: None,
            };
            print_bytes(&client.apply(request).await?.into_inner().response)?
        }
        Command::Query => {
            let request = proto::QueryRequest {
                request: guest_input(&args)?,
                consistency: consistency.into(),
            };
            print_bytes(&client.query(request).await?.into_inner().response)?
        }
        Command::Watch if args.key.is_some() || args.prefix.is_some() => {
            let (key, prefix) = match (args.key.clone(), args.prefix.clone()) {
                (Some(key), None) => (key, false),
                (None, Some(prefix)) => (prefix, true),
                _ => anyhow::bail!("watch takes --key or --prefix, not both"),
            };
            let connect = || connect(&args, &args.server);
            watch::watch_changes(connect, key, prefix, args.from, args.retries).await?
        }
        Command::Watch => watch(&mut client).await?,
        Command::Addnode => {
            let request = proto::AddNodeRequest {
                id: need(args.id, "--id")?,
                address: need(args.address, "--address")?,
                learner: args.learner,
            };
            print_status(client.add_node(request).await?.into_inner())?
        }
        Command::Remove => {
            let request = proto::RemoveNodeRequest {
                id: need(args.id, "--id")?,
            };
            print_status(client.remove_node(request).await?.into_inner())?
        }
        Command::Transfer => {
            let request = proto::TransferLeaderRequest {
                id: need(args.id, "--id")?,
            };
            print_status(client.transfer_leader(request).await?.into_inner())?
        }
        Command::Get => {
            let request = proto::GetRequest {
                key: need(args.key, "--key")?,
                consistency: consistency.into(),
            };
            println!("{}", client.get(request).await?.into_inner().value);
        }
        // Handled above, before connecting.
        Command::Set | Command::Delete => write_command(&args).await?,
    }
    Ok(())
}

/// `set` and `delete`, in a session unless --no-session, retried (see [`write`]).
async fn write_command(args: &Args) -> Result<()> {
    match args.command {
        Command::Set => {
            let request = proto::PutRequest {
                session: session(args).await?,
                key: need(args.key.clone(), "--key")?,
                value: need(args.val.clone(), "--val")?,
            };
            let in_session = request.session.is_some();
            let reply = write(args, in_session, |mut c| {
                let request = request.clone();
                async move { c.put(request).await }
            })
            .await?;
            println!("ok (log index {})", reply.into_inner().log_index);
        }
        Command::Delete => {
            let request = proto::DeleteRequest {
                session: session(args).await?,
                key: need(args.key.clone(), "--key")?,
            };
            let in_session = request.session.is_some();
            let reply = write(args, in_session, |mut c| {
                let request = request.clone();
                async move { c.delete(request).await }
            })
            .await?
            .into_inner();
            if !reply.deleted {
                let key = args.key.as_deref().unwrap_or_default();
                return Err(NotFound(format!(
                    "key {key:?} not found (log index {})",
                    reply.log_index
                ))
                .into());
            }
            println!("deleted (log index {})", reply.log_index);
        }
        _ => unreachable!("only set and delete are writes"),
    }
    Ok(())
}

/// The guest command or request: --data, or the contents of --data-file (`-`: stdin).
fn guest_input(args: &Args) -> Result<Vec<u8>> {
    use std::io::Read;
    match (&args.data, &args.data_file) {
        (Some(text), _) => Ok(text.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading standard input")?;
            Ok(bytes)
        }
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        (None, None) => anyhow::bail!("this command needs --data or --data-file"),
    }
}

/// A guest's answer as it came, then a newline.
fn print_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Replaces the cluster's state machine with the component at `path` (or only validates it).
async fn upgrade(client: &mut Client, path: &std::path::Path, dry_run: bool) -> Result<()> {
    let module = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let reply = client
        .upgrade_fsm(proto::UpgradeFsmRequest { module, dry_run })
        .await?
        .into_inner();
    if reply.dry_run {
        println!(
            "module {} ({} bytes) is valid; nothing logged",
            reply.hash, reply.size
        );
    } else {
        println!(
            "module {} ({} bytes) active from log index {}",
            reply.hash, reply.size, reply.log_index
        );
    }
    Ok(())
}

/// Builds a snapshot on the node now.
async fn snapshot(client: &mut Client) -> Result<()> {
    let reply = client
        .snapshot(proto::SnapshotRequest {})
        .await?
        .into_inner();
    println!(
        "snapshot at index {} (term {}), {} bytes",
        reply.index, reply.term, reply.size
    );
    Ok(())
}

/// Prints the node's status each time it changes, until the stream ends.
async fn watch(client: &mut Client) -> Result<()> {
    let request = proto::MonitorRequest::default();
    let mut stream = client.watch(request).await?.into_inner();
    while let Some(status) = stream.message().await? {
        print_status(status)?;
    }
    Ok(())
}
