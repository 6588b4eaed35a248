//! `gateway`: a Pingora reverse proxy that replaces nginx in front of MCP tool servers.
//! See `gateway --help` and conf/local.toml for the configuration reference.

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access_log;
mod admin;
mod auth;
mod cli;
mod config;
mod context;
mod edge;
mod mcp;
mod metrics;
mod policy;
mod proxy;
mod request;
mod routing;
mod server;
mod shutdown;
mod state;
mod telemetry;
mod trace;
mod upstream;

use std::process::ExitCode;

use cli::Command;

fn main() -> ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and
    // with THP on, thousands of open streams held about twice the memory they use (a 2 MiB
    // page resident for a few KB of it). Only future mappings are affected; set first thing.
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Command::Help => {
            print!("{}", cli::HELP);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Test => test_config(&cli),
        Command::Signal(sig) => send_signal(&cli, sig),
        Command::Run => run(&cli),
    }
}

/// The configuration file, or its problems printed like `nginx -t` does.
fn load_config(cli: &cli::Cli) -> Result<config::Config, ExitCode> {
    config::load(&cli.config).map_err(|errors| {
        eprintln!(
            "gateway: configuration file {} test failed\n{errors}",
            cli.config.display()
        );
        if !cli.config_given && !cli.config.exists() {
            eprintln!(
                "gateway: no -c FILE given, so the default {} was looked for: name the file \
                 the gateway runs with, e.g. -c conf/local.toml",
                cli.config.display()
            );
        }
        ExitCode::FAILURE
    })
}

/// `-t`: nginx -t style output.
fn test_config(cli: &cli::Cli) -> ExitCode {
    if let Err(code) = load_config(cli) {
        return code;
    }
    let file = cli.config.display();
    eprintln!("gateway: the configuration file {file} syntax is ok");
    eprintln!("gateway: configuration file {file} test is successful");
    ExitCode::SUCCESS
}

/// `-s reload|stop|quit`: signal the running gateway found through the pid file.
fn send_signal(cli: &cli::Cli, sig: &str) -> ExitCode {
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let pid_file = &cfg.server.pid_file;
    let pid: i32 = match std::fs::read_to_string(pid_file)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s.trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        }) {
        Ok(p) if p > 0 => p,
        Ok(p) => {
            eprintln!("gateway: {}: invalid pid {p}", pid_file.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("gateway: cannot read pid file {}: {e}", pid_file.display());
            return ExitCode::FAILURE;
        }
    };
    let signo = match sig {
        "reload" => libc::SIGHUP,
        "stop" => libc::SIGTERM,
        _ => libc::SIGQUIT,
    };
    // Signal 0 first: a stale pid file and a reload of another file are refused before anything
    // reaches the process.
    if let Err(code) = kill(pid, 0, pid_file) {
        return code;
    }
    if sig == "reload" {
        if let Err(message) = same_config(&cfg, pid) {
            eprintln!("gateway: {message}");
            return ExitCode::FAILURE;
        }
    }
    match kill(pid, signo, pid_file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// kill(2), with the failure explained.
fn kill(pid: i32, signo: i32, pid_file: &std::path::Path) -> Result<(), ExitCode> {
    // SAFETY: kill(2) with a pid read from our own pid file and a constant signal number.
    if unsafe { libc::kill(pid, signo) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        // Like nginx's "invalid PID": the file outlived its process.
        eprintln!(
            "gateway: no gateway is running as pid {pid} (stale pid file {}): start it first",
            pid_file.display()
        );
    } else {
        eprintln!("gateway: cannot signal pid {pid}: {e}");
    }
    Err(ExitCode::FAILURE)
}

/// A reload makes the running gateway re-read the file it runs from, not the -c file: when the
/// two differ, the -c file's edits would silently not apply, so say which file runs instead.
fn same_config(cfg: &config::Config, pid: i32) -> Result<(), String> {
    let Some(running) = cli::recorded_config(&cfg.server.pid_file) else {
        return Ok(()); // a gateway that recorded nothing: nothing to compare
    };
    let asked = cli::config_identity(&cfg.file);
    if running == asked {
        return Ok(());
    }
    Err(format!(
        "not reloading: the running gateway (pid {pid}, {pid_file}) runs from {running}, not \
         {asked}, and a reload re-reads its own file.\n  \
         to apply {running}: gateway -s reload -c {running}\n  \
         to run from {asked}: stop it (gateway -s stop -c {running}), then start it with -c {asked}",
        pid_file = cfg.server.pid_file.display(),
        running = running.display(),
        asked = asked.display(),
    ))
}

fn run(cli: &cli::Cli) -> ExitCode {
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // -d detaches like nginx: the launching shell's stdout/stderr are not kept, so the
    // program log needs a file and a stdout access log would be lost.
    if cli.daemon {
        let problem = if cfg.server.error_log.is_none() {
            Some("daemon mode (-d) needs [server].error_log: a file for the program's log")
        } else if cfg.server.access_log == config::AccessLog::Stdout {
            Some("daemon mode (-d) would lose [server].access_log = \"stdout\": give a file path or \"off\"")
        } else {
            None
        };
        if let Some(p) = problem {
            eprintln!("gateway: {}: {p}", cli.config.display());
            return ExitCode::FAILURE;
        }
    }
    let mut logger = env_logger::Builder::new();
    if let Some(path) = &cfg.server.error_log {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                logger.target(env_logger::Target::Pipe(Box::new(file)));
            }
            Err(e) => {
                eprintln!("gateway: [server].error_log {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    logger.filter_level(cfg.server.error_log_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        logger.parse_filters(&spec);
    }
    logger.init();
    // For `-s reload -c FILE`: which file this gateway runs from (see cli::config_record).
    if let Err(e) = cli::record_config(&cfg.server.pid_file, &cfg.file) {
        log::warn!(
            "cannot record the configuration file in {}: {e}",
            cli::config_record(&cfg.server.pid_file).display()
        );
    }
    trace::init(&cfg.tracing);
    match server::run(cfg, cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
