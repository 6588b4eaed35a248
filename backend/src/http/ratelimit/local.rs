//! The per-replica token bucket (the default, without REDIS_URL): up to one minute's allowance,
//! refilling continuously. Keys are hashes, so tokens are not kept in yet another place in
//! memory.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many keys, full (idle) buckets are dropped: an idle key's bucket is full anyway.
const MAX_KEYS: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct LocalLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl LocalLimiter {
    pub fn new(per_minute: u32) -> LocalLimiter {
        LocalLimiter {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute as u32
    }

    /// Ok to go ahead, or Err(how long until the next request would be allowed).
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let key = h.finish();
        let now = Instant::now();
        let rate_per_sec = self.per_minute / 60.0;
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            let cap = self.per_minute;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.last).as_secs_f64() * rate_per_sec < cap
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.per_minute,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate_per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.per_minute);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / rate_per_sec,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_minute_then_refuses() {
        let l = LocalLimiter::new(3);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        assert!(l.check("b").is_ok(), "keys are independent");
    }
}
