//! Wiring: the Pingora server with its services (the proxy on the HTTP and HTTPS listeners, the
//! admin listener, the pool maintenance background service) built from a loaded config.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log;
use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::Config;
use crate::edge::conn::Clocked;
use crate::edge::tls;
use crate::proxy::GatewayProxy;
use crate::shutdown::Signals;
use crate::state::{Shared, State};
use crate::upstream::maintenance::Maintenance;

/// Pingora's L4 buffers under client connections: none. Both are allocated at accept and kept
/// for the connection's life (64 KiB to read, the asked size to write), which made an idle
/// keep-alive connection cost about 100 KB. Reads go straight into the HTTP parser's buffer
/// (and, over TLS, OpenSSL's own read-ahead buffer, released when idle: see `edge::tls`);
/// writes are coalesced by `edge::conn::ClientConn`, whose buffer exists only while a response
/// is being written.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::unbuffered()
}

fn server_conf(cfg: &Config, cli: &Cli) -> ServerConf {
    let s = &cfg.server;
    ServerConf {
        threads: s.threads.max(1),
        daemon: cli.daemon,
        // Daemonized, Pingora sends stderr (panics included) here instead of keeping the
        // launching shell's descriptors open.
        error_log: cfg
            .server
            .error_log
            .as_ref()
            .filter(|_| cli.daemon)
            .map(|p| p.to_string_lossy().into_owned()),
        pid_file: s.pid_file.to_string_lossy().into_owned(),
        upgrade_sock: s.upgrade_sock.to_string_lossy().into_owned(),
        // Upper bound of the drain after SIGTERM / SIGQUIT; shutdown.rs exits earlier once idle.
        grace_period_seconds: Some(s.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // Pingora keeps one idle-connection pool for all upstreams: size it for every pool.
        upstream_keepalive_pool_size: cfg
            .pools
            .values()
            .map(|p| p.keepalive)
            .sum::<usize>()
            .max(1),
        ..ServerConf::default()
    }
}

/// Connection settings Pingora fixes when the listener starts (a reload does not change them):
/// nginx's `keepalive_timeout` for idle HTTP/2 connections, and `keepalive_requests`.
fn server_options(cfg: &Config) -> HttpServerOptions {
    let l = &cfg.limits;
    let mut o = HttpServerOptions::default();
    o.h2_idle_timeout = (!l.keepalive_timeout.is_zero()).then_some(l.keepalive_timeout);
    o.keepalive_request_limit = Some(l.keepalive_requests);
    o
}

pub fn run(cfg: Config, cli: &Cli) -> Result<(), String> {
    let conf = server_conf(&cfg, cli);
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    for dir in [&cfg.server.pid_file, &cfg.server.upgrade_sock]
        .iter()
        .filter_map(|p| p.parent())
    {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match crate::edge::fd_limit::apply(cfg.server.worker_rlimit_nofile) {
        Ok(o) => {
            if let Some(w) = &o.warning {
                log::warn!("{w}");
            }
            log::info!(
                "open files limit {} (was {}): client connections plus upstream connections \
                 fit under it",
                o.now,
                o.before
            );
        }
        Err(e) => log::warn!("cannot set the open files limit (worker_rlimit_nofile): {e}"),
    }
    access_log::ACCESS.init(&cfg.server.access_log)?;
    access_log::AUDIT.init(&cfg.server.audit_log)?;

    let tls_settings = match &cfg.listeners.https {
        Some(l) => {
            if let Some(f) = &l.stapling_file {
                log::info!("OCSP stapling from {} (re-read on reload)", f.display());
            }
            Some(tls::settings(l)?)
        }
        None => None,
    };
    let config_path: PathBuf = cfg.file.clone();
    let listeners = cfg.listeners.clone();
    let listeners_pid_file = cfg.server.pid_file.clone();
    let (state, activation) = State::build(Arc::new(cfg), 1)?;
    let shared = Shared::new(state, config_path);
    activation.apply();

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // `gateway -s reload` finds this process through the pid file, which Pingora
    // writes only when it daemonizes.
    if !cli.daemon {
        let pid_file = &listeners_pid_file;
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("server.pid_file: cannot write {}: {e}", pid_file.display()))?;
    }

    let mut app = http_proxy(
        &server.configuration,
        GatewayProxy {
            shared: shared.clone(),
        },
    );
    app.server_options = Some(server_options(&shared.load().config));
    let mut proxy = Service::new(
        "gateway proxy".to_string(),
        Clocked {
            app: Arc::new(app),
            shared: shared.clone(),
        },
    );
    if let Some(h) = &listeners.http {
        proxy.add_listener(ListenerConfig::tcp(h.address.to_string()).l4_buffer(client_buffers()));
    }
    if let (Some(l), Some(settings)) = (&listeners.https, tls_settings) {
        proxy.add_listener(
            ListenerConfig::tcp(l.address.to_string())
                .tls(settings)
                .l4_buffer(client_buffers()),
        );
    }
    server.add_service(proxy);

    if let Some(a) = &listeners.admin {
        let mut admin = Service::new(
            "admin".to_string(),
            AdminApp {
                shared: shared.clone(),
            },
        );
        admin.add_tcp(&a.address.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    server.add_service(background_service(
        "pool maintenance",
        Maintenance {
            shared: shared.clone(),
        },
    ));

    log::info!(
        "gateway {} starting: http {:?}, https {:?}, admin {:?}",
        env!("CARGO_PKG_VERSION"),
        listeners.http.as_ref().map(|l| l.address),
        listeners.https.as_ref().map(|l| l.address),
        listeners.admin.as_ref().map(|l| l.address),
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { shared }),
    });
    Ok(())
}
