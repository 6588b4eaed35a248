//! RATE_LIMIT: requests per minute per bearer token (per client IP when auth is off), as a
//! token bucket holding up to one minute's allowance and refilling continuously.
//!
//! Without REDIS_URL each replica counts alone (`local`): N replicas let a token through N
//! times. With REDIS_URL (`redis`) the bucket lives in Redis, updated by one atomic script per
//! check on Redis's clock, so all replicas share one allowance.

pub mod local;
pub mod redis;
mod resp;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis_target::RedisChoice;
use std::time::Duration;

/// Why a request may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the limit: this long until the next request would be allowed.
    Limited(Duration),
    /// The shared store is unreachable and RATE_LIMIT_REDIS_FAILURE=closed.
    Unavailable,
}

pub enum RateLimiter {
    Local(local::LocalLimiter),
    Redis(redis::RedisLimiter),
}

impl RateLimiter {
    /// None when RATE_LIMIT is 0 (off).
    pub fn from_config(config: &Config, metrics: &Metrics) -> Option<RateLimiter> {
        match &config.rate_limit_redis {
            RedisChoice::Ignored => log::info!(
                "REDIS_URL is set but ENABLE_DISTRIBUTED_RATE_LIMIT=false: Redis is not used, \
                 the rate limit is counted per replica"
            ),
            RedisChoice::Redis(_) if config.rate_limit == 0 => {
                log::info!("REDIS_URL is set but RATE_LIMIT is 0 (off): Redis is not used")
            }
            _ => {}
        }
        if config.rate_limit == 0 {
            return None;
        }
        Some(match &config.rate_limit_redis {
            RedisChoice::Redis(settings) => {
                log::info!(
                    "rate limit: {} per minute per key, shared through {:?} (on failure: {})",
                    config.rate_limit,
                    settings.target,
                    if settings.fail_open { "open" } else { "closed" }
                );
                RateLimiter::Redis(redis::RedisLimiter::new(
                    config.rate_limit,
                    settings.clone(),
                    metrics,
                ))
            }
            _ => RateLimiter::Local(local::LocalLimiter::new(config.rate_limit)),
        })
    }

    pub fn per_minute(&self) -> u32 {
        match self {
            RateLimiter::Local(l) => l.per_minute(),
            RateLimiter::Redis(r) => r.per_minute(),
        }
    }

    /// Takes one token from `key`'s bucket, or says why not.
    pub async fn check(&self, key: &str) -> Result<(), Refusal> {
        match self {
            RateLimiter::Local(l) => l.check(key).map_err(Refusal::Limited),
            RateLimiter::Redis(r) => r.check(key).await,
        }
    }
}
