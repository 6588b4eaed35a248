//! Rate zones with nginx's exact `limit_req` semantics, as a pure data structure: no clock, no
//! I/O, no proxy code. The caller passes the time in milliseconds and acts on the [`Decision`]
//! (sleep for `Delay`, answer the zone's status with `Retry-After` for `Reject`).
//!
//! The algorithm is `ngx_http_limit_req_module.c` (nginx ≥ 1.15.7, the version with `delay=`),
//! for one zone per location (all the schema allows):
//!
//! * Per key: `excess` in milli-requests and `last` in ms. `rate` is milli-requests per second
//!   (`10r/s` → 10000, `30r/m` → 500: nginx's `rate * 1000 / scale`, truncated).
//! * A request at `now`: `ms = now - last` (`ms < -60000` → 1, `ms < 0` → 0: clock jumps);
//!   `excess = max(0, excess - rate * ms / 1000 + 1000)` in integer arithmetic, truncating
//!   exactly like nginx (so `1r/m` drains 1000 milli-requests only after 62.5 s, not 60 s).
//! * `excess > burst * 1000` → rejected, and **the state is not updated** (only its LRU position
//!   is): rejected requests do not push the client further into debt.
//! * Otherwise the state is stored (`last` only moves when `ms != 0`) and the request is delayed
//!   by `(excess - delay * 1000) * 1000 / rate` ms when `excess > delay * 1000`; `nodelay` means
//!   an infinite threshold, no option means threshold 0 (every excess request waits).
//! * A key seen for the first time starts at excess 0 (its first request costs nothing, as in
//!   nginx, where a new node is stored with `excess = 0`).
//!
//! Memory: nginx bounds a zone by bytes; we bound it by keys, `size / 128` (nginx documents
//! 128 bytes per state on 64-bit platforms, so a `10m` zone holds the same 81920 clients as
//! nginx's). Eviction is least-recently-used, per shard. Like nginx, creating a state first
//! drops up to two idle ones (unused ≥ 60 s and fully drained) from the LRU end, and forces out
//! the oldest only when the zone is full.
//!
//! Concurrency: keys are spread over shards, each a mutex around an LRU map, so clients on
//! different shards never contend. The LRU order is per shard, an approximation of nginx's single
//! queue that only matters when the zone is full.

mod zone;

#[cfg(test)]
mod tests;

pub use zone::{Decision, Delay, Zone};
