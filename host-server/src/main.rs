//! `pickup-relay`: serves Pickup batches over TCP and serial ports.
//!
//! ```text
//! pickup-relay serve [--tcp ADDR]... [--serial PATH[@BAUD]]... [--data DIR] [--config FILE] [--log-json]
//! ```
//!
//! Without a subcommand it serves too. Flags override the config file;
//! listeners given as flags replace the file's as a whole
//! ([`Config::choose_listeners`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pickup_relay::codes::{self, TARGET_GUESS_BOUND};
use pickup_relay::descriptors;
use pickup_relay::random::OsRandom;
use pickup_relay::store::sqlite::SqliteStore;
use pickup_relay::transport::{self, serial, Clock};
use pickup_relay::{Config, Relay};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "pickup-relay",
    version,
    about = "The Pickup relay",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve batches (the default).
    Serve(ServeArgs),
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// TCP address to listen on (repeatable). Listeners given here replace
    /// the config file's; with none anywhere, 127.0.0.1:7425.
    #[arg(long = "tcp", value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// Serial port to serve, PATH or PATH@BAUD (repeatable). Alone, no TCP
    /// listener starts.
    #[arg(long = "serial", value_name = "PATH[@BAUD]")]
    serial: Vec<String>,
    /// Data directory. Default ./pickup-data.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.choose_listeners(&args.tcp, &args.serial);
    if let Some(data) = &args.data {
        config.data.clone_from(data);
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    init_logging(args.log_json);
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let clock = Clock::new();
    let (store, recovery) = SqliteStore::open(&config.data)
        .map_err(|e| format!("cannot open the store in {}: {e}", config.data.display()))?;
    tracing::info!(
        data = %config.data.display(),
        batches = recovery.batches,
        resumable_partials = recovery.partials,
        truncated = recovery.truncated,
        orphans_removed = recovery.orphans,
        moved_back = recovery.moved_back,
        missing_blobs = recovery.missing_blobs,
        "store open"
    );
    // Never chmod-ed here: the operator may have widened them on purpose.
    for (path, mode) in pickup_relay::store::sqlite::wide_permissions(&config.data) {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "data readable by other users; the relay creates it private (0700/0600): chmod -R go-rwx to match"
        );
    }
    let inputs = config.guess_inputs();
    let code_len = config.code_len();
    let bound = codes::guess_bound(code_len, &inputs);
    tracing::info!(
        code_len,
        code_bits = 5 * code_len,
        guess_bound = bound,
        global_failed_lookups_per_sec = inputs.global_rate_per_sec,
        global_burst = inputs.global_burst,
        max_live_batches = inputs.max_live_batches,
        reserved_share = config.rate_limit.reserved_share,
        "codes: P(any live code guessed within a year) <= {bound:.3e}"
    );
    if bound >= TARGET_GUESS_BOUND {
        tracing::warn!("the configured code length does not keep the guessing bound below {TARGET_GUESS_BOUND:e}");
    }
    let endpoints = (config.tcp.listen.len() + config.serial.ports.len()) as u64;
    let budget = descriptors::plan(endpoints, config.limits.max_sessions)
        .map_err(|e| format!("descriptors: {e}"))?;
    store.limit_open_files(budget.store_files_per_kind);
    let mut settings = config.settings();
    settings.max_sessions = budget.sessions;
    let relay = Relay::new(settings, Arc::new(store), Box::new(OsRandom), clock.now());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut listeners = Vec::new();
    let mut tcp_names = Vec::new();
    let mut serial_names = Vec::new();
    for addr in &config.tcp.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tcp_names.push(local.to_string());
        listeners.push(listener);
    }
    let stop_serial = Arc::new(AtomicBool::new(false));
    let mut serial_threads = Vec::new();
    let backoff = serial::Backoff {
        min: Duration::from_millis(config.serial.reopen_min_ms),
        max: Duration::from_millis(config.serial.reopen_max_ms.max(config.serial.reopen_min_ms)),
    };
    for spec in config.serial_ports()? {
        serial_names.push(format!("{}@{}", spec.path, spec.baud));
        let thread = serial::spawn(
            spec,
            relay.clone(),
            config.serial_link(),
            clock,
            backoff,
            stop_serial.clone(),
        )
        .map_err(|e| format!("cannot start a serial thread: {e}"))?;
        serial_threads.push(thread);
    }
    for listener in listeners {
        tokio::spawn(transport::tcp::serve(
            listener,
            relay.clone(),
            config.tcp_link(),
            clock,
            shutdown_rx.clone(),
        ));
    }
    // Fields, so `--log-json` gives them as JSON values; a kind with no
    // listener is left out. Text reads `listening: tcp=A,B serial=P@BAUD`;
    // the colon stays, as scripts and tests wait for `listening:`.
    tracing::info!(
        tcp = join_or_empty(&tcp_names),
        serial = join_or_empty(&serial_names),
        "listening:"
    );

    let sweeper = {
        let relay = relay.clone();
        let every = Duration::from_secs(config.sweep_interval_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let relay = relay.clone();
                match tokio::task::spawn_blocking(move || relay.sweep(clock.now())).await {
                    Ok(Ok(stats)) if stats != Default::default() => tracing::info!(
                        batches = stats.batches,
                        blobs = stats.blobs,
                        partials = stats.partials,
                        forgotten = stats.forgotten,
                        "expired batches swept"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("sweep failed: {e}"),
                    Err(e) => tracing::error!("sweeper panicked: {e}"),
                }
            }
        })
    };

    wait_for_signal().await;
    tracing::info!(sessions = relay.sessions(), "shutting down");
    relay.begin_shutdown();
    sweeper.abort();
    let _ = shutdown_tx.send(true);
    stop_serial.store(true, Ordering::Release);
    let grace = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_grace_secs);
    while relay.sessions() > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in serial_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    if relay.sessions() > 0 {
        tracing::warn!(
            sessions = relay.sessions(),
            "sessions still open at exit; their acknowledged bytes are durable"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// `items` joined by commas for a log field, or no field when empty
/// (`None` records nothing).
fn join_or_empty(items: &[String]) -> Option<tracing::field::DisplayValue<String>> {
    (!items.is_empty()).then(|| tracing::field::display(items.join(",")))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
