//! Weighted least-connections, like nginx's `least_conn`: the backend with the lowest
//! in-flight/weight ratio wins. Ties are broken fairly by starting the scan at a position taken
//! from a smooth weighted round-robin wheel, so equal loads (an idle pool) spread by weight.
//!
//! Pingora has no such selector and its `BackendSelection::iter` yields a fixed order without
//! access to live counts, so this is a small structure of our own over [`BackendEntry`]s.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::BackendEntry;

/// Smooth weighted round-robin order of `weights` (nginx's algorithm), reduced by the gcd and
/// capped so a large weight does not make a large table.
pub fn build_wheel(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut w: Vec<i64> = weights.iter().map(|x| i64::from((x / g).max(1))).collect();
    let mut total: i64 = w.iter().sum();
    const MAX_WHEEL: i64 = 4096;
    if total > MAX_WHEEL {
        // Keep proportions roughly; every backend keeps at least one slot.
        let scale = total as f64 / MAX_WHEEL as f64;
        for x in w.iter_mut() {
            *x = ((*x as f64 / scale).round() as i64).max(1);
        }
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        wheel.push(best as u32);
    }
    wheel
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Index of the chosen backend among those `accept` allows.
pub fn select(
    backends: &[std::sync::Arc<BackendEntry>],
    wheel: &[u32],
    cursor: &AtomicUsize,
    accept: impl Fn(&BackendEntry) -> bool,
) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let start = if wheel.is_empty() {
        0
    } else {
        wheel[cursor.fetch_add(1, Relaxed) % wheel.len()] as usize
    };
    let mut best: Option<(usize, i64, i64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let b = &backends[i];
        if !accept(b) {
            continue;
        }
        let load = b.stats.in_flight.get().max(0);
        let weight = i64::from(b.weight.max(1));
        match best {
            // load/weight < best_load/best_weight, without division; strict so ties keep the
            // one nearest the wheel's position.
            Some((_, bl, bw)) if load * bw >= bl * weight => {}
            _ => best = Some((i, load, weight)),
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balance::BackendEntry;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn entries(pool: &str, weights: &[u32]) -> Vec<Arc<BackendEntry>> {
        let pool: Arc<str> = pool.into();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                BackendEntry::new(
                    &pool,
                    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
                    *w,
                    "h".into(),
                )
            })
            .collect()
    }

    #[test]
    fn wheel_follows_weights() {
        let wheel = build_wheel(&[1, 2]);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.iter().filter(|&&i| i == 1).count(), 2);
        let wheel = build_wheel(&[5, 5]);
        assert_eq!(wheel, vec![0, 1]);
        assert_eq!(
            build_wheel(&[10_000, 1])
                .iter()
                .filter(|&&i| i == 1)
                .count(),
            1
        );
    }

    #[test]
    fn picks_fewest_in_flight() {
        let b = entries("lc-fewest", &[1, 1, 1]);
        let wheel = build_wheel(&[1, 1, 1]);
        let cursor = AtomicUsize::new(0);
        b[0].stats.in_flight.set(3);
        b[1].stats.in_flight.set(1);
        b[2].stats.in_flight.set(2);
        for _ in 0..6 {
            assert_eq!(select(&b, &wheel, &cursor, |_| true), Some(1));
        }
        // Excluded (unhealthy, already tried) backends are skipped.
        assert_eq!(
            select(&b, &wheel, &cursor, |e| e.addr != b[1].addr),
            Some(2)
        );
        assert_eq!(select(&b, &wheel, &cursor, |_| false), None);
    }

    #[test]
    fn ties_are_fair_and_weighted() {
        let b = entries("lc-ties", &[1, 3]);
        let wheel = build_wheel(&[1, 3]);
        let cursor = AtomicUsize::new(0);
        let mut hits = [0; 2];
        for _ in 0..400 {
            hits[select(&b, &wheel, &cursor, |_| true).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 300]);
        // Weight scales the load: 2 in flight on weight 3 beats 1 on weight 1.
        b[0].stats.in_flight.set(1);
        b[1].stats.in_flight.set(2);
        assert_eq!(select(&b, &wheel, &cursor, |_| true), Some(1));
        b[0].stats.in_flight.set(0);
        b[1].stats.in_flight.set(0);
    }
}
