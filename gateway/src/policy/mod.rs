//! Traffic policy: rate zones (nginx's `limit_req`, the algorithm in `limit/`), splits
//! (blue-green, canary, stickiness) and the canary's automatic rollback.

pub mod limit;
pub mod rollback;
pub mod split;
pub mod zones;
