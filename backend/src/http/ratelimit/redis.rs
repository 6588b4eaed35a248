//! The shared token bucket in Redis (REDIS_URL). Each check is one atomic Lua script
//! (EVALSHA, EVAL when Redis answers NOSCRIPT) doing what `local` does, on Redis's clock
//! (`TIME`), so the replicas' clocks do not matter. The key is `mcp:rl:` + the SHA-256 of the
//! rate-limit key (never the token itself) and expires 2 minutes after its last use (a bucket
//! idle for a minute is full anyway).
//!
//! Every check, connecting included, is bounded by REDIS_TIMEOUT_MS. When Redis is down, slow
//! or refusing, RATE_LIMIT_REDIS_FAILURE decides: `open` lets the call through, `closed`
//! refuses it (503 UNAVAILABLE); both are counted in
//! `rate_limit_redis_errors_total{outcome="allowed"|"refused"}` and logged at warn at most
//! every 10 s. A broken connection is dropped and reopened on a later check, at most every
//! 500 ms, so an outage costs no waiting once detected.

use super::resp::{Conn, Reply};
use super::Refusal;
use crate::metrics::Metrics;
use crate::redis_target::RedisRateLimit;
use prometheus::{IntCounterVec, Opts};
use sha2::{Digest, Sha256};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const KEY_PREFIX: &str = "mcp:rl:";
const KEY_TTL_MS: &str = "120000";
/// Connections kept open: checks run in parallel on them.
const POOL: usize = 4;
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// ARGV[1] = capacity (= refill per minute), ARGV[2] = key expiry in ms.
/// Returns {1, 0} when allowed, {0, ms until the next token} when not.
const SCRIPT: &str = r#"
local cap = tonumber(ARGV[1])
local per_us = cap / 60000000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local last = tonumber(v[2])
if tokens == nil or last == nil then
  tokens = cap
  last = now
end
if now > last then
  tokens = math.min(cap, tokens + (now - last) * per_us)
  last = now
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / per_us / 1000)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {allowed, wait}
"#;

struct Health {
    /// No connection attempt before this instant (after a failed one).
    retry_at: Option<Instant>,
    last_warn: Option<Instant>,
    /// Failures since the last warning.
    unlogged: u64,
    failing: bool,
}

pub struct RedisLimiter {
    per_minute: u32,
    settings: RedisRateLimit,
    pool: Vec<tokio::sync::Mutex<Option<Conn>>>,
    next: AtomicUsize,
    /// The script's SHA-1 as Redis reported it (SCRIPT LOAD on the first connection).
    sha: Mutex<Option<String>>,
    health: Mutex<Health>,
    errors: IntCounterVec,
}

impl RedisLimiter {
    pub fn new(per_minute: u32, settings: RedisRateLimit, metrics: &Metrics) -> RedisLimiter {
        let errors = IntCounterVec::new(
            Opts::new(
                "rate_limit_redis_errors_total",
                "Rate-limit checks Redis could not answer in time, by what was done \
                 (allowed: RATE_LIMIT_REDIS_FAILURE=open, refused: closed)",
            ),
            &["outcome"],
        )
        .and_then(|c| {
            // Both series exist from the start, at 0.
            c.with_label_values(&["allowed"]);
            c.with_label_values(&["refused"]);
            metrics.register(Box::new(c.clone()))?;
            Ok(c)
        })
        .unwrap_or_else(|e| {
            log::error!("metric rate_limit_redis_errors_total not registered: {e}");
            IntCounterVec::new(Opts::new("unregistered", "-"), &["outcome"])
                .unwrap_or_else(|_| unreachable!("constant metric options"))
        });
        RedisLimiter {
            per_minute,
            settings,
            pool: (0..POOL).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            sha: Mutex::new(None),
            health: Mutex::new(Health {
                retry_at: None,
                last_warn: None,
                unlogged: 0,
                failing: false,
            }),
            errors,
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    pub async fn check(&self, key: &str) -> Result<(), Refusal> {
        let redis_key = format!(
            "{KEY_PREFIX}{}",
            hex::encode(Sha256::digest(key.as_bytes()))
        );
        let outcome = match tokio::time::timeout(self.settings.timeout, self.run(&redis_key)).await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms (REDIS_TIMEOUT_MS)",
                self.settings.timeout.as_millis()
            )),
        };
        match outcome {
            Ok(r) => {
                self.recovered();
                r
            }
            Err(why) => {
                self.failed(&why);
                if self.settings.fail_open {
                    self.errors.with_label_values(&["allowed"]).inc();
                    Ok(())
                } else {
                    self.errors.with_label_values(&["refused"]).inc();
                    Err(Refusal::Unavailable)
                }
            }
        }
    }

    /// One check on a pooled connection, opening it if needed. The connection is taken out of
    /// its slot while in use: if the check fails or is cancelled by the timeout midway, it is
    /// dropped rather than reused with a half-read reply.
    async fn run(&self, redis_key: &str) -> io::Result<Result<(), Refusal>> {
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % POOL];
        let mut guard = slot.lock().await;
        let mut conn = match guard.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        let result = self.eval(&mut conn, redis_key).await?;
        *guard = Some(conn);
        Ok(result)
    }

    async fn open(&self) -> io::Result<Conn> {
        {
            let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            if health.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(io::Error::other("Redis unreachable, retrying shortly"));
            }
        }
        let attempt = async {
            let mut conn = Conn::connect(&self.settings.target).await?;
            if self.sha().is_none() {
                match conn.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await? {
                    Reply::Bulk(Some(sha)) => {
                        *self.sha.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(String::from_utf8_lossy(&sha).into_owned())
                    }
                    other => return Err(io::Error::other(format!("SCRIPT LOAD: {other:?}"))),
                }
            }
            Ok(conn)
        };
        let result = attempt.await;
        if result.is_err() {
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            health.retry_at = Some(Instant::now() + RECONNECT_EVERY);
        }
        result
    }

    fn sha(&self) -> Option<String> {
        self.sha.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn eval(&self, conn: &mut Conn, redis_key: &str) -> io::Result<Result<(), Refusal>> {
        let cap = self.per_minute.to_string();
        let mut reply = match self.sha() {
            Some(sha) => {
                let args: [&[u8]; 6] = [
                    b"EVALSHA",
                    sha.as_bytes(),
                    b"1",
                    redis_key.as_bytes(),
                    cap.as_bytes(),
                    KEY_TTL_MS.as_bytes(),
                ];
                conn.call(&args).await?
            }
            None => Reply::Error("NOSCRIPT".into()),
        };
        if matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
            let args: [&[u8]; 6] = [
                b"EVAL",
                SCRIPT.as_bytes(),
                b"1",
                redis_key.as_bytes(),
                cap.as_bytes(),
                KEY_TTL_MS.as_bytes(),
            ];
            reply = conn.call(&args).await?;
        }
        match reply {
            Reply::Array(Some(items)) => match items.as_slice() {
                [Reply::Int(1), _] => Ok(Ok(())),
                [Reply::Int(0), Reply::Int(ms)] => Ok(Err(Refusal::Limited(
                    Duration::from_millis(u64::try_from(*ms).unwrap_or(0).max(1)),
                ))),
                _ => Err(io::Error::other(format!(
                    "unexpected script reply {items:?}"
                ))),
            },
            Reply::Error(e) => Err(io::Error::other(format!("Redis error: {e}"))),
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    fn failed(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.failing = true;
        h.unlogged += 1;
        let now = Instant::now();
        if h.last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            log::warn!(
                "rate limit: Redis {:?} failed ({why}); {} check(s) {} since the last message \
                 (RATE_LIMIT_REDIS_FAILURE={})",
                self.settings.target,
                h.unlogged,
                if self.settings.fail_open {
                    "allowed"
                } else {
                    "refused"
                },
                if self.settings.fail_open {
                    "open"
                } else {
                    "closed"
                },
            );
            h.last_warn = Some(now);
            h.unlogged = 0;
        }
    }

    fn recovered(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.failing {
            h.failing = false;
            h.retry_at = None;
            log::info!(
                "rate limit: Redis {:?} answers again ({} more failed check(s) since the last \
                 warning)",
                self.settings.target,
                h.unlogged
            );
            h.unlogged = 0;
        }
    }
}
