//! Upstream failures of one request: passive health (nginx's `max_fails`/`fail_timeout`) and
//! the one retry path (the failed backend is not tried again).

use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

use crate::context::Ctx;
use crate::routing::Target;
use crate::state::State;

/// The request's target, on the state it runs on (an Arc clone, so `ctx` stays free to update).
fn current_target(ctx: &Ctx) -> Option<(Arc<State>, usize, usize)> {
    let state = ctx.state.clone()?;
    let route = ctx.route?;
    let target = ctx.target?;
    state.routes.get(route)?.targets.get(target)?;
    Some((state, route, target))
}

fn target_of(state: &State, route: usize, target: usize) -> &Target {
    &state.routes[route].targets[target]
}

/// Passive health (nginx's `max_fails`/`fail_timeout`): count a failure of the attempt's backend.
pub fn record_backend_failure(ctx: &Ctx, peer: &HttpPeer) {
    let (Some((state, route, target)), Some(attempt)) =
        (current_target(ctx), ctx.attempt.slot.as_ref())
    else {
        return;
    };
    let pool = &target_of(&state, route, target).pool;
    if attempt
        .stats()
        .record_failure(pool.max_fails, pool.fail_timeout)
    {
        log::warn!(
            "pool {}: backend {} marked down for {:?} after {} failures",
            pool.name,
            peer,
            pool.fail_timeout,
            pool.max_fails
        );
    }
}

/// The one retry path: the failed backend is not tried again; retry while the route allows
/// and the pool has another backend, else give up.
pub fn retry_elsewhere(ctx: &mut Ctx, e: &mut Error) {
    let Some((state, route, target)) = current_target(ctx) else {
        e.set_retry(false);
        return;
    };
    let t = target_of(&state, route, target);
    if let Some(addr) = ctx.attempt.backend.take() {
        ctx.attempt.tried.push(addr);
    }
    if ctx.attempt.retries_left > 0 && t.pool.select(b"", &ctx.attempt.tried).is_some() {
        ctx.attempt.retries_left -= 1;
        t.metrics.retries.inc();
    } else {
        e.set_retry(false);
    }
}
