//! Graceful shutdown on SIGTERM/SIGINT: stop accepting at once (readiness turns 503), let
//! calls and open streams run for SHUTDOWN_GRACE_MS, then close the streams still open
//! (SSE sessions, MCP streams, Task MCP streams end their bodies cleanly) and exit 0.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Shutdown {
    draining: AtomicBool,
    streams: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Cancelled when the grace period is over: every open stream ends.
    pub fn streams_token(&self) -> CancellationToken {
        self.streams.clone()
    }

    pub fn close_streams(&self) {
        self.streams.cancel();
    }
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot install signal handlers ({e}); falling back to Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
