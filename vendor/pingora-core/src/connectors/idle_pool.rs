//! The keep-alive pool of idle upstream streams (patched, see PATCHES.md "10").
//!
//! pingora-pool's `ConnectionPool` watched every idle stream with a task of its own: each
//! release allocated the task, an `Arc<Mutex<Stream>>`, an `Arc<Notify>`, a oneshot channel and
//! an LRU node, armed a timer, and each reuse woke that task and waited for it to hand the stream
//! back. Under keep-alive that is paid once per request. Here an idle stream is a plain entry in
//! a per-peer list, and one thread per pool looks at them every [`SWEEP_INTERVAL`]: a stream its
//! peer closed (or sent unexpected bytes on) is dropped, and so is one past its idle timeout.
//! Taking a stream checks it the same way first, so a stream closed between two sweeps is never
//! handed out. nginx keeps its upstream keep-alive cache the same way (a queue per upstream,
//! most recently used first, `keepalive_timeout` checked by a timer).

use super::test_reusable_stream;
use super::PoolCallback;
use crate::protocols::Stream;
use log::{debug, warn};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

/// How often idle streams are checked for a close by their peer and for their idle timeout: a
/// closed idle stream holds its descriptor at most this long, and an idle timeout is kept to
/// within it.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    since: Instant,
    deadline: Option<Instant>,
    /// Release order across all peers: the lowest is the least recently used.
    order: u64,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

#[derive(Default)]
struct Groups {
    /// Idle streams by peer (`Peer::reuse_hash`), most recently released last.
    by_key: HashMap<u64, VecDeque<Idle>>,
    len: usize,
    next_order: u64,
}

/// Idle streams kept for reuse, at most `size` of them over all peers.
pub(crate) struct IdlePool {
    groups: Mutex<Groups>,
    size: usize,
    sweeper: Once,
    unexpected_data: Arc<AtomicU64>,
    /// Called with the time a stream was idle when the pool size makes it leave unused.
    evicted: Option<PoolCallback>,
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        unexpected_data: Arc<AtomicU64>,
        evicted: Option<PoolCallback>,
    ) -> Self {
        IdlePool {
            groups: Mutex::new(Groups::default()),
            size,
            sweeper: Once::new(),
            unexpected_data,
            evicted,
        }
    }

    /// Keep `stream` for the next request to the peer `key`, for at most `idle_timeout`. The least
    /// recently used stream of any peer leaves when the pool is full.
    pub(crate) fn put(this: &Arc<Self>, key: u64, stream: Stream, idle_timeout: Option<Duration>) {
        if this.size == 0 {
            return;
        }
        let now = Instant::now();
        let evicted = {
            let mut guard = this.groups.lock();
            let g = &mut *guard;
            let order = g.next_order;
            g.next_order += 1;
            g.by_key.entry(key).or_default().push_back(Idle {
                stream,
                since: now,
                deadline: idle_timeout.and_then(|t| now.checked_add(t)),
                order,
            });
            g.len += 1;
            if g.len > this.size {
                g.pop_least_recent()
            } else {
                None
            }
        };
        if let Some(idle) = evicted {
            debug!("keep-alive pool full, closing its least recently used stream");
            if let Some(callback) = &this.evicted {
                callback(idle.since.elapsed());
            }
        }
        this.sweeper
            .call_once(|| start_sweeper(Arc::downgrade(this)));
    }

    /// The most recently released stream to the peer `key` that is still open and within its
    /// idle timeout.
    pub(crate) fn get(&self, key: u64) -> Option<Stream> {
        loop {
            let mut idle = {
                let mut guard = self.groups.lock();
                let g = &mut *guard;
                let idle = g.by_key.get_mut(&key)?.pop_back()?;
                g.len -= 1;
                idle
            };
            if idle.expired(Instant::now()) {
                debug!("idle stream past its idle timeout, closing it");
                continue;
            }
            if test_reusable_stream(&mut idle.stream, &self.unexpected_data) {
                return Some(idle.stream);
            }
        }
    }

    /// Take out the streams that were closed, sent bytes or are past their idle timeout, and
    /// the lists of peers with no stream left. The caller drops what is returned, outside the
    /// lock.
    fn sweep(&self, now: Instant) -> Vec<Idle> {
        let mut gone = Vec::new();
        let mut guard = self.groups.lock();
        let g = &mut *guard;
        for list in g.by_key.values_mut() {
            let mut i = 0;
            while i < list.len() {
                let idle = &mut list[i];
                if idle.expired(now)
                    || !test_reusable_stream(&mut idle.stream, &self.unexpected_data)
                {
                    gone.extend(list.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        g.len -= gone.len();
        g.by_key.retain(|_, list| !list.is_empty());
        gone
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.lock().len
    }
}

impl Groups {
    fn pop_least_recent(&mut self) -> Option<Idle> {
        let key = *self
            .by_key
            .iter()
            .filter_map(|(k, list)| list.front().map(|idle| (k, idle.order)))
            .min_by_key(|(_, order)| *order)?
            .0;
        let idle = self.by_key.get_mut(&key)?.pop_front()?;
        self.len -= 1;
        Some(idle)
    }
}

/// One thread per pool, started with its first idle stream; it ends when the pool is dropped.
/// A thread rather than a task, so that it does not depend on the runtime that happened to
/// release the first stream (each Pingora service has its own).
fn start_sweeper(pool: Weak<IdlePool>) {
    let spawned = std::thread::Builder::new()
        .name("keepalive-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(SWEEP_INTERVAL);
            let Some(pool) = pool.upgrade() else { return };
            let gone = pool.sweep(Instant::now());
            drop(pool);
            if !gone.is_empty() {
                debug!("closed {} idle upstream streams", gone.len());
            }
        });
    if let Err(e) = spawned {
        // Still correct: a stream is checked when it is taken, and the pool size bounds them.
        warn!("no sweeper thread for the keep-alive pool ({e}): closed idle streams stay until reused or evicted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pool(size: usize) -> Arc<IdlePool> {
        Arc::new(IdlePool::new(size, Arc::new(AtomicU64::new(0)), None))
    }

    /// A stream for the pool and its far end, which the test keeps.
    fn pair() -> (Stream, DuplexStream) {
        let (near, far) = tokio::io::duplex(64);
        (Box::new(near), far)
    }

    /// Whether a byte written on `stream` arrives at `far`: which stream the pool handed out.
    async fn reaches(mut stream: Stream, far: &mut DuplexStream) -> bool {
        stream.write_all(b"?").await.unwrap();
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(1), far.read_exact(&mut b))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_most_recently_released_stream_is_reused_first() {
        let p = pool(8);
        let (a, mut far_a) = pair();
        let (b, mut far_b) = pair();
        IdlePool::put(&p, 7, a, None);
        IdlePool::put(&p, 7, b, None);
        assert_eq!(p.len(), 2);
        assert!(
            p.get(8).is_none(),
            "another peer's streams are not handed out"
        );
        assert!(
            reaches(p.get(7).unwrap(), &mut far_b).await,
            "b was released last"
        );
        assert!(reaches(p.get(7).unwrap(), &mut far_a).await);
        assert!(p.get(7).is_none());
        assert_eq!(p.len(), 0);
    }

    #[tokio::test]
    async fn a_full_pool_closes_the_least_recently_used_stream_of_any_peer() {
        let evictions = Arc::new(AtomicUsize::new(0));
        let counted = evictions.clone();
        let callback: PoolCallback = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let p = Arc::new(IdlePool::new(
            2,
            Arc::new(AtomicU64::new(0)),
            Some(callback),
        ));
        let (a, mut far_a) = pair();
        let (b, _far_b) = pair();
        let (c, _far_c) = pair();
        IdlePool::put(&p, 1, a, None);
        IdlePool::put(&p, 2, b, None);
        IdlePool::put(&p, 2, c, None);
        assert_eq!(p.len(), 2);
        assert_eq!(evictions.load(Ordering::Relaxed), 1);
        // a was the oldest: it is closed (its far end reads EOF) and peer 1 has nothing left.
        let mut buf = [0u8; 1];
        assert_eq!(far_a.read(&mut buf).await.unwrap(), 0);
        assert!(p.get(1).is_none());
        assert!(p.get(2).is_some() && p.get(2).is_some());
    }

    #[tokio::test]
    async fn a_stream_closed_by_its_peer_is_never_handed_out_and_is_swept() {
        let p = pool(8);
        let (a, mut far_a) = pair();
        let (b, far_b) = pair();
        let (c, _far_c) = pair();
        IdlePool::put(&p, 1, a, None);
        IdlePool::put(&p, 1, b, None);
        IdlePool::put(&p, 2, c, None);
        drop(far_b);
        // b is the most recent, but closed: get skips it and hands out a.
        assert!(reaches(p.get(1).unwrap(), &mut far_a).await);
        assert_eq!(p.len(), 1);
        let (d, far_d) = pair();
        IdlePool::put(&p, 1, d, None);
        drop(far_d);
        assert_eq!(p.sweep(Instant::now()).len(), 1);
        assert_eq!(p.len(), 1, "only the open stream of peer 2 is left");
        assert!(p.get(2).is_some());
    }

    #[tokio::test]
    async fn unexpected_bytes_on_an_idle_stream_close_it_and_are_counted() {
        let counter = Arc::new(AtomicU64::new(0));
        let p = Arc::new(IdlePool::new(8, counter.clone(), None));
        let (a, mut far_a) = pair();
        IdlePool::put(&p, 1, a, None);
        far_a
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        assert!(p.get(1).is_none());
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        assert_eq!(p.len(), 0);
    }

    #[tokio::test]
    async fn a_stream_past_its_idle_timeout_is_not_reused_and_is_closed_by_the_sweep() {
        let p = pool(8);
        let (a, mut far_a) = pair();
        let (b, _far_b) = pair();
        IdlePool::put(&p, 1, a, Some(Duration::from_millis(20)));
        IdlePool::put(&p, 2, b, Some(Duration::from_secs(3600)));
        let later = Instant::now() + Duration::from_millis(50);
        let gone = p.sweep(later);
        assert_eq!(gone.len(), 1);
        drop(gone);
        let mut buf = [0u8; 1];
        assert_eq!(
            far_a.read(&mut buf).await.unwrap(),
            0,
            "the timed-out stream is closed"
        );
        assert_eq!(p.len(), 1);

        let (c, _far_c) = pair();
        IdlePool::put(&p, 3, c, Some(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            p.get(3).is_none(),
            "get checks the timeout between two sweeps"
        );
    }

    #[tokio::test]
    async fn the_sweeper_thread_closes_streams_by_itself() {
        let p = pool(8);
        let (a, mut far_a) = pair();
        IdlePool::put(&p, 1, a, Some(Duration::from_millis(10)));
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(SWEEP_INTERVAL * 3, far_a.read(&mut buf)).await;
        assert_eq!(read.expect("swept within three intervals").unwrap(), 0);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn size_zero_keeps_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = pool(0);
            let (a, _far) = pair();
            IdlePool::put(&p, 1, a, None);
            assert!(p.get(1).is_none());
        });
    }
}
