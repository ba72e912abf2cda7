//! `pickup-relay`: serves Pickup batches over TCP, TLS and serial ports,
//! and manages the accounts that may authenticate to it ([`admin`]).
//!
//! ```text
//! pickup-relay serve [--tcp ADDR]... [--tls ADDR]... [--cert FILE] [--key FILE]
//!                    [--serial PATH[@BAUD]]... [--http ADDR]... [--https ADDR]...
//!                    [--metrics ADDR]
//!                    [--data DIR] [--config FILE] [--log-json]
//! pickup-relay cert self-signed --name HOST [--cert FILE] [--key FILE] [--data DIR] [--force]
//! pickup-relay user add|list|passwd|remove|quota …  [--data DIR] [--config FILE]
//! pickup-relay terminal add|list|remove …           [--data DIR] [--config FILE]
//! pickup-relay migrate [--config FILE]
//! ```
//!
//! Without a subcommand it serves too. Flags override the config file;
//! listeners given as flags replace the file's as a whole
//! ([`Config::choose_listeners`]).

mod admin;
mod backend;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pickup_relay::codes::{self, TARGET_GUESS_BOUND};
use pickup_relay::config::{Listeners, Peers, DEFAULT_TLS_CERT, DEFAULT_TLS_KEY};
use pickup_relay::descriptors;
use pickup_relay::http;
use pickup_relay::random::OsRandom;
use pickup_relay::transport::{self, listen, serial, tls, Clock};
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
    /// Manage users: add, list, passwd, remove, quota.
    User(admin::UserArgs),
    /// Manage terminals: add, list, remove.
    Terminal(admin::TerminalArgs),
    /// Make TLS certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Bring the PostgreSQL schema of `[store]` up to this relay's
    /// (backend = "postgres"; `serve` does so too), and print its version.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// TOML configuration file, with `[store]`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Write a self-signed certificate and its key (mode 0600), and print
    /// the certificate's fingerprint for clients' `--pin`.
    SelfSigned(SelfSignedArgs),
}

#[derive(Debug, Args)]
struct SelfSignedArgs {
    /// The name clients dial: a host name or an IP address.
    #[arg(long, value_name = "HOST")]
    name: String,
    /// Certificate file. Default DIR/tls-cert.pem in the data directory.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Key file. Default DIR/tls-key.pem in the data directory.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Data directory. Default ./pickup-data.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// TCP address to listen on (repeatable). Listeners given here replace
    /// the config file's; with none anywhere, 127.0.0.1:7425.
    #[arg(long = "tcp", value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// TLS address to listen on (repeatable). Like --tcp, replaces the
    /// config file's listeners.
    #[arg(long = "tls", value_name = "ADDR")]
    tls: Vec<SocketAddr>,
    /// TLS certificate chain (PEM). Default DIR/tls-cert.pem in the data
    /// directory.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM). Default DIR/tls-key.pem in the data directory.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Serial port to serve, PATH or PATH@BAUD (repeatable). Alone, no TCP
    /// listener starts.
    #[arg(long = "serial", value_name = "PATH[@BAUD]")]
    serial: Vec<String>,
    /// HTTP address to listen on (repeatable): a download page per code,
    /// its files and a ZIP of the batch. Like --tcp, replaces the config
    /// file's listeners.
    #[arg(long = "http", value_name = "ADDR")]
    http: Vec<SocketAddr>,
    /// HTTPS address to listen on (repeatable): the same pages as --http,
    /// with TLS, using the certificate and key of --cert and --key.
    #[arg(long = "https", value_name = "ADDR")]
    https: Vec<SocketAddr>,
    /// Address to serve /metrics, /healthz and /readyz on (HTTP). Default
    /// none: no such listener.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
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

/// The config file (or the defaults) with `--data` over it: what `serve`
/// and the admin commands start from (each then checks it, `serve` once
/// its listeners are settled).
fn load_config(file: Option<&Path>, data: Option<&Path>) -> Result<Config, String> {
    let mut config = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(data) = data {
        config.data = data.to_owned();
    }
    Ok(config)
}

fn config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = load_config(args.config.as_deref(), args.data.as_deref())?;
    config.choose_listeners(&Listeners {
        tcp: &args.tcp,
        tls: &args.tls,
        serial: &args.serial,
        http: &args.http,
        https: &args.https,
    });
    if args.cert.is_some() {
        config.tls.cert.clone_from(&args.cert);
    }
    if args.key.is_some() {
        config.tls.key.clone_from(&args.key);
    }
    if args.metrics.is_some() {
        config.metrics.listen = args.metrics;
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::User(args)) => return admin::user(args),
        Some(Command::Terminal(args)) => return admin::terminal(args),
        Some(Command::Cert(CertCommand::SelfSigned(args))) => return self_signed(&args),
        Some(Command::Migrate(args)) => return backend::migrate(&args),
        None => cli.serve,
    };
    init_logging(args.log_json);
    // The peers' key files are read once, at start, and checked there.
    let config = config(&args).and_then(|c| Ok((c.load_peers()?, c)));
    let (peers, config) = match config {
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
    match runtime.block_on(serve(config, peers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `cert self-signed`: the fingerprint alone on stdout, for scripts.
fn self_signed(args: &SelfSignedArgs) -> ExitCode {
    let data = args.data.clone().unwrap_or_else(|| Config::default().data);
    let cert = args
        .cert
        .clone()
        .unwrap_or_else(|| data.join(DEFAULT_TLS_CERT));
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| data.join(DEFAULT_TLS_KEY));
    match tls::write_self_signed(&args.name, &cert, &key, args.force) {
        Ok(fingerprint) => {
            eprintln!(
                "wrote {} and {} (key, mode 0600) for {}",
                cert.display(),
                key.display(),
                args.name
            );
            println!("{fingerprint}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pickup-relay: error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config, peers: Peers) -> Result<(), String> {
    let clock = Clock::new();
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
        failed_lookups = pickup_relay::rate_limit::budget_scope(
            config.store.backend == pickup_relay::config::Backend::Postgres
        ),
        "codes: P(any live code guessed within a year) <= {bound:.3e}"
    );
    if bound >= TARGET_GUESS_BOUND {
        tracing::warn!("the configured code length does not keep the guessing bound below {TARGET_GUESS_BOUND:e}");
    }
    let endpoints = (config.tcp.listen.len()
        + config.tls.listen.len()
        + config.serial.ports.len()
        + config.http.listen.len()
        + config.http.https.len()) as u64;
    let budget = descriptors::plan(endpoints, config.limits.max_sessions)
        .map_err(|e| format!("descriptors: {e}"))?;
    let store = backend::open_store(&config, budget.store_files_per_kind).await?;
    // Never chmod-ed here: the operator may have widened them on purpose.
    for (path, mode) in pickup_relay::store::sqlite::wide_permissions(&config.data) {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "data readable by other users; the relay creates it private (0700/0600): chmod -R go-rwx to match"
        );
    }
    let mut settings = config.settings();
    settings.max_sessions = budget.sessions;
    for peer in peers.iter() {
        tracing::info!(peer = %peer.name, addr = ?peer.addr, "peer relay");
    }
    settings.peers = peers;
    let directory = backend::open_directory(&config, settings.auth.password).await?;
    let relay = Relay::with_directory(settings, store, directory, Box::new(OsRandom), clock.now());
    // Held while the relay serves: its tasks end when it drops.
    let _cluster = backend::join_cluster(&config, &relay).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut listeners = Vec::new();
    let mut tcp_names = Vec::new();
    let mut serial_names = Vec::new();
    for addr in &config.tcp.listen {
        let listener = listen::bind(*addr, config.limits.listen_backlog)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tcp_names.push(local.to_string());
        listeners.push(listener);
    }
    // One certificate for the TLS wire listeners and the HTTPS ones.
    let server_tls = if config.tls.listen.is_empty() && config.http.https.is_empty() {
        None
    } else {
        let (cert, key) = config.tls_files();
        let server = tls::server_config(&cert, &key)?;
        tracing::info!(
            cert = %cert.display(),
            fingerprint = tls::fingerprint_of_file(&cert)?,
            "TLS certificate"
        );
        Some(server)
    };
    let mut tls_listeners = Vec::new();
    let mut tls_names = Vec::new();
    for addr in &config.tls.listen {
        let listener = listen::bind(*addr, config.limits.listen_backlog)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tls_names.push(local.to_string());
        tls_listeners.push(listener);
    }
    let mut http_listeners = Vec::new();
    let mut http_names = Vec::new();
    let mut https_names = Vec::new();
    let plain = config.http.listen.iter().map(|a| (a, false));
    for (addr, secure) in plain.chain(config.http.https.iter().map(|a| (a, true))) {
        let listener = listen::bind(*addr, config.limits.listen_backlog)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let tls = if secure {
            https_names.push(local.to_string());
            server_tls.clone()
        } else {
            http_names.push(local.to_string());
            None
        };
        http_listeners.push((listener, tls));
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
    for listener in tls_listeners {
        let Some(server) = server_tls.clone() else {
            break;
        };
        tokio::spawn(tls::serve(
            listener,
            server,
            relay.clone(),
            config.tls_link(),
            clock,
            shutdown_rx.clone(),
        ));
    }
    if !http_listeners.is_empty() {
        // One router for every HTTP listener. Metrics and health have
        // their own listener (`--metrics`), apart from the public pages.
        let mut router = http::router(http::HttpState::new(relay.clone(), clock));
        if config.http.upload_page {
            router = router.merge(http::upload_page::router());
        }
        for (listener, tls) in http_listeners {
            tokio::spawn(http::serve(
                listener,
                tls,
                router.clone(),
                relay.clone(),
                shutdown_rx.clone(),
            ));
        }
    }
    let mut metrics_name = None;
    if let Some(addr) = config.metrics.listen {
        let listener = listen::bind(addr, config.limits.listen_backlog)
            .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        metrics_name = Some(tracing::field::display(local));
        tokio::spawn(pickup_relay::metrics::http::serve(
            listener,
            relay.clone(),
            shutdown_rx.clone(),
        ));
    }
    // Before `listening:`: a supervisor or test that sends SIGTERM as soon
    // as it reads that line must get a clean shutdown, not the default
    // action (an abrupt exit).
    let signals = ShutdownSignals::install();
    // Fields, so `--log-json` gives them as JSON values; a kind with no
    // listener is left out. Text reads `listening: tcp=A,B tls=C serial=P@BAUD
    // http=D https=E metrics=M`;
    // the colon stays, as scripts and tests wait for `listening:`.
    tracing::info!(
        tcp = join_or_empty(&tcp_names),
        tls = join_or_empty(&tls_names),
        serial = join_or_empty(&serial_names),
        http = join_or_empty(&http_names),
        https = join_or_empty(&https_names),
        metrics = metrics_name,
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
                        forwards = stats.forwards,
                        "expired batches swept"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("sweep failed: {e}"),
                    Err(e) => tracing::error!("sweeper panicked: {e}"),
                }
            }
        })
    };

    // Forwards to peer relays (issue 17): a relay without peers has none
    // to run, but may hold some queued before its peers were removed; they
    // fail as UnknownPeer once claimed.
    let forwarder = tokio::spawn(pickup_relay::forward::service::serve(
        relay.clone(),
        shutdown_rx.clone(),
    ));

    signals.wait().await;
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
    // Runs stop at their next read or connect and are written due again.
    let until = grace.max(tokio::time::Instant::now() + Duration::from_secs(1));
    if tokio::time::timeout_at(until, forwarder).await.is_err() {
        tracing::warn!("forwards still stopping at exit; they resume from the peer's offsets");
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

/// SIGINT and SIGTERM, caught from the moment they are installed.
enum ShutdownSignals {
    Unix(tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    /// The handlers could not be installed: Ctrl-C only.
    CtrlC,
}

impl ShutdownSignals {
    fn install() -> ShutdownSignals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => ShutdownSignals::Unix(int, term),
            _ => ShutdownSignals::CtrlC,
        }
    }

    async fn wait(self) {
        match self {
            ShutdownSignals::Unix(mut int, mut term) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            ShutdownSignals::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
