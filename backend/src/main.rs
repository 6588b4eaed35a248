//! `backend`: reads its configuration from the environment (see `backend --help`), opens the
//! OpenSpec workspace, serves HTTP until SIGTERM/SIGINT, then drains and exits 0.
//! Exit codes: 0 after a clean shutdown, 2 for a bad argument or configuration value,
//! 1 on a second SIGTERM/SIGINT during the drain (exit at once),
//! 1 when the port cannot be bound or the server fails.
//!
//! `backend backup [--wait SECS] [FILE|-]` and `backend restore [--wait SECS] FILE|-` back up
//! and restore the workspace (see `backup`): exit 0 done, 1 failed, 2 bad arguments.

use backend::config::{self, Config};
use backend::exec::Executor;
use backend::http::{self, AppState};
use backend::metrics::Metrics;
use backend::openspec::Workspace;
use backend::shutdown::{self, Shutdown};
use backend::store::postgres::PostgresStore;
use backend::store::sqlite::SqliteStore;
use backend::store::Store;
use backend::tools::{Family, Registry};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

/// After the grace period, open streams are cancelled; this much more is allowed for their
/// bodies to end before the process exits regardless.
const CLOSE_MARGIN: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and
    // with THP on, thousands of open streams held about twice the memory they use (a 2 MiB
    // page resident for a few KB of it). Only future mappings are affected; set first thing.
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    if let Some(arg) = std::env::args().nth(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{}", config::help_text());
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("backend {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "backup" | "restore" => {
                let rest: Vec<String> = std::env::args().skip(2).collect();
                return backend::backup::main(&arg, &rest);
            }
            other => {
                eprintln!(
                    "backend: unknown argument {other:?}; the server is configured by environment; \
                     subcommands: backup, restore (see --help)"
                );
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backend: {e}");
            return ExitCode::from(2);
        }
    };
    // rmcp logs every stateless request at info (through tracing's log bridge): keep it at
    // warn unless debugging, or the log costs more than the call.
    let rmcp_level = config.log_level.min(log::LevelFilter::Warn).max(
        if config.log_level >= log::LevelFilter::Debug {
            config.log_level
        } else {
            log::LevelFilter::Off
        },
    );
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .filter_module("rmcp", rmcp_level)
        .filter_module("tracing", rmcp_level)
        .format(|buf, record| {
            // Every record bounded, whatever logged it (rmcp echoes client input too).
            use std::io::Write;
            let message = record.args().to_string();
            writeln!(
                buf,
                "[{} {} {}] {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                backend::bounded::bounded_line(&message)
            )
        })
        .target(env_logger::Target::Stderr)
        .init();
    let workspace = match Workspace::open(&config.working_directory) {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("backend: invalid WORKING_DIRECTORY: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backend: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(config, workspace))
}

/// The item store, when TOOLS enables a family that keeps items (todo, memory): PostgreSQL
/// with DATABASE_URL, else SQLite at DATABASE_PATH. Opened and migrated now, on a blocking
/// thread; a database that cannot be reached is logged, reported by /health/ready and retried
/// at each call (the calls answer UNAVAILABLE meanwhile), so the other tools keep serving.
async fn open_store(config: &Config) -> Result<Option<Arc<dyn Store>>, String> {
    if !config.tool_families.iter().any(Family::uses_store) {
        return Ok(None);
    }
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresStore::new(url, config.database_pool_size, config.database_timeout)
                .map_err(|e| format!("DATABASE_URL: {e}"))?,
        ),
        None => Arc::new(SqliteStore::new(
            &config.database_path,
            config.database_busy_timeout,
        )),
    };
    let probe = store.clone();
    match tokio::task::spawn_blocking(move || probe.check()).await {
        Ok(Ok(())) => log::info!("item store: {}", store.describe()),
        Ok(Err(e)) => log::error!("item store {}: {e}", store.describe()),
        Err(e) => log::error!(
            "item store {}: the first check failed: {e}",
            store.describe()
        ),
    }
    Ok(Some(store))
}

async fn serve(config: Config, workspace: Workspace) -> ExitCode {
    let config = Arc::new(config);
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("backend: cannot register metrics: {e}");
            return ExitCode::from(1);
        }
    };
    // Variables of the user's Node server that mean nothing here: say so instead of ignoring
    // them silently.
    for (var, why) in [
        (
            "TLS_CERT",
            "TLS terminates at the gateway; the backend speaks plain HTTP",
        ),
        (
            "TLS_KEY",
            "TLS terminates at the gateway; the backend speaks plain HTTP",
        ),
        ("PROMETHEUS_PORT", "metrics are served on /metrics of PORT"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "metrics are scraped from /metrics, not pushed over OTLP (traces are: OTEL_ENABLED)",
        ),
    ] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            log::warn!("{var} is set but ignored: {why}");
        }
    }
    if let Err(e) = backend::trace::init(config.otel.as_ref(), &metrics) {
        eprintln!("backend: {e}");
        return ExitCode::from(1);
    }
    if config.auth_tokens.is_empty() {
        log::warn!("AUTH_TOKENS is empty: authentication is disabled, every client may call tools");
    }
    log::info!("workspace: {}", workspace.root().display());
    backend::openspec::recovery::at_start(&workspace);
    let store = match open_store(&config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("backend: {e}");
            return ExitCode::from(2);
        }
    };
    if store.is_some() && config.database_url.is_none() {
        let db_dir = config.database_path.parent().map(std::fs::canonicalize);
        if let Some(Ok(dir)) = db_dir {
            if dir.starts_with(workspace.root()) {
                log::warn!(
                    "DATABASE_PATH {} is inside the openspec/ tree: backup and restore would \
                     copy and swap it; set DATABASE_PATH outside it",
                    config.database_path.display()
                );
            }
        }
    }
    let registry = Arc::new(Registry::with_families(
        workspace,
        &config.tool_families,
        store,
    ));
    // One line per tool, as the todo server's start-up log reads (operators grep for them).
    for (family, defs) in registry.families() {
        for d in defs {
            log::info!("Registered tool: {} ({})", d.name, family.as_str());
        }
    }
    let exec = Arc::new(Executor::new(
        registry,
        metrics.clone(),
        config.request_timeout,
        config.max_response_bytes,
    ));
    let shutdown = Arc::new(Shutdown::new());
    let state = Arc::new(AppState::new(
        config.clone(),
        exec,
        metrics,
        shutdown.clone(),
    ));
    let app = http::router(state);

    let addr = SocketAddr::new(config.host, config.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backend: cannot listen on {addr} (HOST/PORT): {e}");
            return ExitCode::from(1);
        }
    };
    log::info!("listening on http://{addr} (MCP on /mcp, SSE on /sse)");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = config.shutdown_grace;
    let drain = shutdown.clone();
    tokio::spawn(async move {
        let name = shutdown::signal().await;
        log::info!(
            "{name}: no longer accepting; draining for up to {} ms",
            grace.as_millis()
        );
        drain.begin_drain();
        let _ = stop_tx.send(());
        // A second signal means "now": the operator does not want to wait for the drain.
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            second = shutdown::signal() => {
                log::warn!("{second} during the drain: exiting without waiting");
                std::process::exit(1);
            }
        }
        log::info!("grace period over: closing open streams");
        drain.close_streams();
        tokio::time::sleep(CLOSE_MARGIN).await;
        log::warn!(
            "connections still open {} ms after the grace period; exiting",
            CLOSE_MARGIN.as_millis()
        );
        std::process::exit(0);
    });

    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    })
    .await;
    match served {
        Ok(()) => {
            // The last requests' spans, before the process ends.
            let _ =
                tokio::task::spawn_blocking(|| backend::trace::flush(Duration::from_secs(2))).await;
            log::info!("drained; bye");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("server failed: {e}");
            ExitCode::from(1)
        }
    }
}
