//! One rate zone: sharded LRU maps of per-key leaky-bucket state (see the module docs for the
//! exact algorithm and where it comes from).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lru::LruCache;

/// Bytes of zone `size` per tracked key: nginx's documented 64-bit state size.
pub const BYTES_PER_KEY: u64 = 128;

/// Shards of a zone large enough to use them all.
const SHARDS: usize = 16;

/// nginx's idle time before a drained state may be dropped.
const EXPIRE_IDLE_MS: u64 = 60_000;

/// When excess requests inside the burst wait (nginx's `limit_req` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// `nodelay`: everything within the burst passes at once.
    NoDelay,
    /// `delay=N` (N = 0 when neither option is given): the first N excess requests pass at
    /// once, later ones wait until the bucket has drained to N.
    After(u32),
}

impl From<crate::config::LimitDelay> for Delay {
    fn from(d: crate::config::LimitDelay) -> Self {
        match d {
            crate::config::LimitDelay::NoDelay => Delay::NoDelay,
            crate::config::LimitDelay::AfterExcess(n) => Delay::After(n),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on now.
    Pass,
    /// Go on after waiting this long (the request is already accounted for).
    Delay(Duration),
    /// Refuse. `retry_after` is when the same key would pass if nothing else arrives (≥ 1 ms;
    /// round up to whole seconds for a `Retry-After` header).
    Reject { retry_after: Duration },
}

/// Totals since the zone was made (they survive [`Zone::set_rate`] and
/// [`Zone::set_max_keys`], so a reload keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Passed without waiting.
    pub passed: u64,
    /// Passed after a delay.
    pub delayed: u64,
    pub rejected: u64,
    /// States dropped to make room (forced LRU eviction; idle expiry is not counted).
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Milli-requests above the rate.
    excess: u64,
    /// ms timestamp of the last accounted request.
    last: u64,
}

struct Shard {
    map: LruCache<Box<[u8]>, State>,
}

/// A rate zone (nginx's `limit_req_zone`): shared by every route that names it.
pub struct Zone {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Milli-requests per second.
    rate: AtomicU64,
    /// Key bound of each shard.
    shard_cap: AtomicUsize,
    passed: AtomicU64,
    delayed: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
}

impl Zone {
    /// A zone draining `rate_milli_per_sec` (see `config::Rate::milli_per_sec`) that tracks at
    /// most about `max_keys` keys (rounded up to a multiple of the shard count).
    pub fn new(rate_milli_per_sec: u64, max_keys: usize) -> Zone {
        let shards = SHARDS.min(max_keys.max(1));
        Self::with_shards(rate_milli_per_sec, max_keys, shards)
    }

    /// Like [`Zone::new`] with an explicit shard count (1 gives one exact LRU order).
    pub fn with_shards(rate_milli_per_sec: u64, max_keys: usize, shards: usize) -> Zone {
        let shards = shards.max(1);
        let zone = Zone {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: LruCache::unbounded(),
                    })
                })
                .collect(),
            hasher: Default::default(),
            rate: AtomicU64::new(rate_milli_per_sec.max(1)),
            shard_cap: AtomicUsize::new(1),
            passed: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        };
        zone.set_max_keys(max_keys);
        zone
    }

    /// The key bound for a zone `size` in bytes (at least 1).
    pub fn keys_for_size(size: u64) -> usize {
        usize::try_from(size / BYTES_PER_KEY)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Changes the rate (a reload); states are kept, as nginx keeps its shared memory.
    pub fn set_rate(&self, rate_milli_per_sec: u64) {
        self.rate
            .store(rate_milli_per_sec.max(1), Ordering::Relaxed);
    }

    /// Changes the key bound (a reload); a smaller bound takes effect as new keys arrive.
    pub fn set_max_keys(&self, max_keys: usize) {
        let per_shard = max_keys.max(1).div_ceil(self.shards.len());
        self.shard_cap.store(per_shard, Ordering::Relaxed);
    }

    pub fn rate_milli_per_sec(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    // The companion of `len` that clippy asks for.
    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counters(&self) -> Counters {
        Counters {
            passed: self.passed.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Accounts one request of `key` at `now_ms` against `burst` and `delay` (the route's
    /// `limit_req` options) and says what to do with it.
    pub fn check(&self, key: &[u8], now_ms: u64, burst: u32, delay: Delay) -> Decision {
        let rate = self.rate.load(Ordering::Relaxed);
        let burst = u64::from(burst) * 1000;
        let cap = self.shard_cap.load(Ordering::Relaxed);
        let mut shard = lock(&self.shards[self.shard_of(key)]);

        let excess = match shard.map.get_mut(key) {
            Some(st) => {
                let ms = elapsed(now_ms, st.last);
                // nginx clamps at 0 after adding the request's 1000, not before.
                let excess = drained(st.excess + 1000, rate, ms);
                if excess > burst {
                    // Not stored: a refused request must not deepen the debt.
                    let retry_after = retry_after_ms(st.excess, burst, rate, ms);
                    drop(shard);
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Decision::Reject {
                        retry_after: Duration::from_millis(retry_after),
                    };
                }
                st.excess = excess;
                if ms != 0 {
                    st.last = now_ms;
                }
                excess
            }
            None => {
                let evicted = make_room(&mut shard.map, cap, now_ms, rate);
                shard.map.put(
                    key.into(),
                    State {
                        excess: 0,
                        last: now_ms,
                    },
                );
                if evicted > 0 {
                    self.evicted.fetch_add(evicted, Ordering::Relaxed);
                }
                0
            }
        };
        drop(shard);

        let threshold = match delay {
            Delay::NoDelay => u64::MAX,
            Delay::After(n) => u64::from(n) * 1000,
        };
        if excess <= threshold {
            self.passed.fetch_add(1, Ordering::Relaxed);
            Decision::Pass
        } else {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            let ms = mul_div(excess - threshold, 1000, rate);
            Decision::Delay(Duration::from_millis(ms))
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
    }
}

/// A poisoned shard only means another thread panicked mid-update of plain integers; the
/// state is still usable.
fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// nginx's `ms`: time since `last`, with backwards clock jumps clamped.
fn elapsed(now: u64, last: u64) -> u64 {
    if now >= last {
        now - last
    } else if last - now > 60_000 {
        1
    } else {
        0
    }
}

/// `max(0, excess - rate * ms / 1000)`, truncating like nginx, without overflow.
fn drained(excess: u64, rate: u64, ms: u64) -> u64 {
    let leak = u128::from(rate) * u128::from(ms) / 1000;
    u64::try_from(u128::from(excess).saturating_sub(leak)).unwrap_or(0)
}

/// `a * b / c` in 128 bits, saturating to u64.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c.max(1))).unwrap_or(u64::MAX)
}

/// Milliseconds from now until a request of this key would pass: the smallest total elapsed
/// time `t` since `last` with `stored - rate * t / 1000 + 1000 <= burst` (integer division as
/// in the check), minus the `ms` already elapsed. At least 1.
fn retry_after_ms(stored: u64, burst: u64, rate: u64, ms: u64) -> u64 {
    let need = (stored + 1000).saturating_sub(burst);
    // floor(rate * t / 1000) >= need  <=>  rate * t >= need * 1000.
    let t = (u128::from(need) * 1000).div_ceil(u128::from(rate.max(1)));
    let t = u64::try_from(t).unwrap_or(u64::MAX);
    t.saturating_sub(ms).max(1)
}

/// Before storing a new key: drop up to two idle, drained states from the LRU end (nginx's
/// `ngx_http_limit_req_expire(ctx, 1)`), then, if still full, the least recently used one
/// (nginx's forced expiry when the slab allocator has no room). Returns forced evictions.
fn make_room(map: &mut LruCache<Box<[u8]>, State>, cap: usize, now: u64, rate: u64) -> u64 {
    for _ in 0..2 {
        let Some((_, st)) = map.peek_lru() else { break };
        let idle = now.saturating_sub(st.last);
        if idle < EXPIRE_IDLE_MS || drained(st.excess, rate, idle) > 0 {
            break;
        }
        map.pop_lru();
    }
    let mut evicted = 0;
    while map.len() >= cap {
        if map.pop_lru().is_none() {
            break;
        }
        evicted += 1;
    }
    evicted
}
