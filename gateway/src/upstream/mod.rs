//! The backend side: pools and their balancers, the peer a request connects to, active health
//! checks, DNS re-resolution of server names, and the background upkeep of pools.

pub mod balance;
pub mod discovery;
pub mod health;
pub mod maintenance;
pub mod peer;
pub mod retry;
