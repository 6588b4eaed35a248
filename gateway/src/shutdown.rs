//! Process signals, in place of Pingora's default watcher:
//! - SIGTERM: graceful stop. Listeners close at once; requests and open streams in flight keep
//!   running until they end or `server.grace_period` runs out (Pingora's `grace_period_seconds`),
//!   and the process exits as soon as none is left instead of always sleeping the whole period.
//! - SIGQUIT: Pingora's graceful upgrade: the listening sockets go to the new process started
//!   with `-u`, then this one drains like SIGTERM.
//! - SIGINT: fast stop.
//! - SIGHUP: reload the config file and swap the routing state; an invalid file changes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::state::Shared;

/// Requests being processed (incremented when a request context is made, decremented when it is
/// dropped).
pub static ACTIVE_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// Marks one request as active for the drain logic.
pub struct ActiveRequest(());

impl ActiveRequest {
    pub fn new() -> ActiveRequest {
        ACTIVE_REQUESTS.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        ACTIVE_REQUESTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pingora waits this long after sending the sockets on SIGQUIT before it stops accepting.
const UPGRADE_CLOSE_DELAY: Duration = Duration::from_secs(5);

pub struct Signals {
    pub shared: Arc<Shared>,
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("cannot listen for {name}: {e}");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        let mut hup = listen(SignalKind::hangup(), "SIGHUP");
        loop {
            tokio::select! {
                _ = next(&mut hup) => {
                    let shared = self.shared.clone();
                    let result = tokio::task::spawn_blocking(move || shared.reload()).await;
                    match result {
                        Ok(Ok(generation)) => log::info!("SIGHUP: configuration reloaded (generation {generation})"),
                        Ok(Err(e)) => log::error!("SIGHUP: reload refused, the running configuration stays:\n{e}"),
                        Err(e) => log::error!("SIGHUP: reload task failed: {e}"),
                    }
                }
                _ = next(&mut term) => {
                    log::info!("SIGTERM: draining {} request(s) in flight", ACTIVE_REQUESTS.load(Ordering::Relaxed));
                    exit_when_drained(Duration::from_millis(200));
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = next(&mut quit) => {
                    log::info!("SIGQUIT: handing the listening sockets to the new process");
                    exit_when_drained(UPGRADE_CLOSE_DELAY + Duration::from_millis(500));
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = next(&mut int) => {
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

/// Pingora sleeps the whole grace period before stopping its runtimes; end the process earlier,
/// once listeners are closed (`after`) and no request or stream is left. Pingora's own grace
/// period remains the upper bound.
fn exit_when_drained(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            std::thread::sleep(after);
            loop {
                let n = ACTIVE_REQUESTS.load(Ordering::Relaxed);
                if n == 0 {
                    log::info!("drained: no request in flight, exiting");
                    // Let the access-log writer flush its last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the drain watcher ({e}); waiting the full grace period");
    }
}
