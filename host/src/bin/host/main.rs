//! `host`: one raftwasm node.
//!
//! `host --id node1 --address localhost:10001 --http localhost:9000 --bs` starts a node running
//! the embedded guest-kv and bootstraps a one-node cluster (first start only). Every flag can also
//! be set through the environment variable named in `--help`.

mod alloc;
mod args;
mod dev;
mod scaffold;

use anyhow::{Context, Result};
use clap::Parser;
use host::config::with_bound_port;
use host::node;
use std::io::IsTerminal;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
    let cli = args::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.worker_threads.into())
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: args::Cli) -> Result<()> {
    init_logging(cli.log_format);
    if let Some(command) = cli.command {
        return run_command(command).await;
    }
    let config = cli.into_config();
    let node = start(&config).await?;
    node.serving.await??;
    Ok(())
}

/// A node started and serving.
struct Running {
    started: node::Started,
    serving: tokio::task::JoinHandle<Result<(), node::NodeError>>,
}

/// Binds the listeners, starts the node and serves until Ctrl-C; prints the banner line.
async fn start(config: &host::config::NodeConfig) -> Result<Running> {
    // Refuse a bad configuration before binding anything.
    config.validate()?;
    let network = &config.network;
    let grpc = TcpListener::bind(&network.address)
        .await
        .with_context(|| format!("binding gRPC address {}", network.address))?;
    let http = TcpListener::bind(&network.http_address)
        .await
        .with_context(|| format!("binding HTTP address {}", network.http_address))?;
    let grpc_addr = network.advertised(grpc.local_addr()?);
    let http_addr = with_bound_port(&network.http_address, http.local_addr()?);
    let started = node::start(config, grpc_addr.clone()).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let serving = tokio::spawn({
        let (config, started) = (config.clone(), started.clone());
        async move { node::serve(&config, started, grpc, http, shutdown).await }
    });

    // One line on stdout that scripts and tests read to learn the bound addresses. It names the
    // module this node runs: on a restart that is its data's module, whatever `--fsm` says.
    let hash = &node::active_module(&started).await;
    let fsm = if *hash == started.configured.hash() {
        started.configured.name().to_string()
    } else {
        format!("sha256:{} (from the data dir)", &hash[..12.min(hash.len())])
    };
    println!(
        "raftwasm node {} grpc={grpc_addr} http={http_addr} fsm={fsm} ({})",
        config.name,
        &hash[..12.min(hash.len())]
    );
    Ok(Running { started, serving })
}

/// `host dev`: a node on `--fsm`, upgraded each time the file changes.
async fn run_dev(args: args::DevArgs) -> Result<()> {
    let config = dev::config(&args);
    println!("dev: data in {}", config.storage.data_dir.display());
    let node = start(&config).await?;
    let watching = tokio::spawn(dev::watch(args, node.started.service.clone()));
    tokio::select! {
        served = node.serving => served??,
        watched = watching => watched??,
    }
    Ok(())
}

/// Log lines to stderr, filtered by RUST_LOG.
fn init_logging(format: args::LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        args::LogFormat::Json => lines.json().init(),
        // Colour codes only for a person at a terminal, not in a log file or journal.
        args::LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// `host restore`: one line on stdout saying what was restored where.
async fn run_restore(args: args::RestoreArgs) -> Result<()> {
    let from = args.from.clone();
    let config = args.into_config();
    let header = host::restore::restore(&config, &from).await?;
    println!(
        "restored {} into {}: log index {} (term {}), module sha256:{}, made by {} ({} bytes of \
         state); start it with: host --id {} --data-dir {} --address {}",
        from.display(),
        config.storage.data_dir.display(),
        header.index,
        header.term,
        &header.module_hash[..12.min(header.module_hash.len())],
        header.made_by,
        header.envelope_bytes,
        config.name,
        config.storage.data_dir.display(),
        config.network.address,
    );
    Ok(())
}

/// `host guest check`: the report on stdout; an error (exit 1) when the guest failed it.
fn run_check(args: args::CheckArgs) -> Result<()> {
    use host::check::{check, guest_kv_script, parse_script};
    let module = host::fsm::GuestModule::from_file(&args.guest, host::fsm::GuestLimits::default())?;
    let steps = match &args.commands {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_script(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => guest_kv_script(args.generate, args.seed),
    };
    let report = check(&module, &steps)?;
    println!("{report}");
    anyhow::ensure!(report.passed(), "{} failed the check", args.guest.display());
    Ok(())
}

/// A subcommand instead of a node: prints to stdout, nothing else.
async fn run_command(command: args::Command) -> Result<()> {
    match command {
        args::Command::Auth(args::AuthCommand::HashPassword) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.strip_suffix('\n').unwrap_or(&line);
            let password = password.strip_suffix('\r').unwrap_or(password);
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            let hash = host::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            println!("{hash}");
        }
        args::Command::Auth(args::AuthCommand::NewToken) => {
            let (token, stored) = host::auth::new_token().map_err(anyhow::Error::msg)?;
            println!("{token}");
            println!("{stored}");
        }
        args::Command::Restore(restore) => run_restore(restore).await?,
        args::Command::Guest(args::GuestCommand::Check(check)) => run_check(check)?,
        args::Command::Guest(args::GuestCommand::New(new)) => {
            let sdk = new.sdk.unwrap_or_else(scaffold::default_sdk);
            let dir = scaffold::new_guest(&new.name, &new.dir, &sdk)?;
            println!(
                "created {}: cd there and cargo build --release, then host guest check or host \
                 dev --fsm on target/wasm32-unknown-unknown/release/{}.wasm",
                dir.display(),
                new.name.replace('-', "_")
            );
        }
        args::Command::Dev(dev) => run_dev(dev).await?,
        args::Command::Wal(args::WalCommand::Verify { data_dir }) => {
            let found = host::store::verify(&data_dir);
            print!("{}", found.report);
            anyhow::ensure!(
                found.problems.is_empty(),
                "{} cannot be trusted:\n{}",
                data_dir.display(),
                found.problems.join("\n")
            );
            println!("ok: a node can start on {}", data_dir.display());
        }
    }
    Ok(())
}
