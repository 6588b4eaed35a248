//! The limiter against a synthetic clock: nginx's documented and source-level behaviour.

use std::sync::Arc;
use std::time::Duration;

use super::*;

const R10S: u64 = 10_000; // 10r/s in milli-requests per second

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn outcome(d: Decision) -> String {
    match d {
        Decision::Pass => "pass".into(),
        Decision::Delay(t) => format!("delay {}ms", t.as_millis()),
        Decision::Reject { .. } => "reject".into(),
    }
}

/// Outcomes of requests of one key at the given times.
fn run(zone: &Zone, times: &[u64], burst: u32, delay: Delay) -> Vec<String> {
    times
        .iter()
        .map(|&t| outcome(zone.check(b"k", t, burst, delay)))
        .collect()
}

#[test]
fn no_burst_allows_one_request_per_interval() {
    let z = Zone::new(R10S, 1000);
    assert_eq!(
        run(&z, &[0, 0, 50, 100, 150, 199, 200], 0, Delay::NoDelay),
        ["pass", "reject", "reject", "pass", "reject", "reject", "pass"]
    );
}

#[test]
fn burst_with_nodelay_passes_burst_plus_one_at_once_then_refills_at_the_rate() {
    // the replaced nginx.conf's `limit_req zone=api burst=20 nodelay` with rate=10r/s.
    let z = Zone::new(R10S, 1000);
    let at_once = run(&z, &[0; 22], 20, Delay::NoDelay);
    assert!(at_once[..21].iter().all(|o| o == "pass"), "{at_once:?}");
    assert_eq!(at_once[21], "reject");
    // One slot comes back every 100 ms, not sooner.
    assert_eq!(
        run(&z, &[99, 100, 100, 200], 20, Delay::NoDelay),
        ["reject", "pass", "reject", "pass"]
    );
    let c = z.counters();
    assert_eq!((c.passed, c.delayed, c.rejected), (23, 0, 3));
}

#[test]
fn without_nodelay_every_excess_request_waits_its_turn() {
    // rate=10r/s burst=5, seven requests in the same millisecond.
    let z = Zone::new(R10S, 1000);
    assert_eq!(
        run(&z, &[0; 7], 5, Delay::After(0)),
        [
            "pass",
            "delay 100ms",
            "delay 200ms",
            "delay 300ms",
            "delay 400ms",
            "delay 500ms",
            "reject"
        ]
    );
    let c = z.counters();
    assert_eq!((c.passed, c.delayed, c.rejected), (1, 5, 1));
}

#[test]
fn delay_threshold_lets_the_first_excess_requests_through() {
    // limit_req burst=5 delay=2.
    let z = Zone::new(R10S, 1000);
    assert_eq!(
        run(&z, &[0; 7], 5, Delay::After(2)),
        [
            "pass",
            "pass",
            "pass",
            "delay 100ms",
            "delay 200ms",
            "delay 300ms",
            "reject"
        ]
    );
}

#[test]
fn a_rejected_request_does_not_update_the_state() {
    // 1r/s, burst 0: pass at 0; a refused request at 500 must not move `last` or the excess,
    // so the request at 1000 passes (it would be refused if the refusal had been stored).
    let z = Zone::new(1000, 10);
    assert_eq!(
        run(&z, &[0, 500, 1000], 0, Delay::NoDelay),
        ["pass", "reject", "pass"]
    );
    // Hammering while refused does not starve the client either.
    let times: Vec<u64> = (1001..2000).step_by(7).chain([2000]).collect();
    let out = run(&z, &times, 0, Delay::NoDelay);
    assert!(out[..out.len() - 1].iter().all(|o| o == "reject"));
    assert_eq!(out.last().unwrap(), "pass");
}

#[test]
fn per_minute_rates_use_nginx_truncated_milli_rate() {
    // 30r/m → 500 milli-requests per second: one request per 2 s.
    let z = Zone::new(500, 10);
    assert_eq!(
        run(&z, &[0, 1999, 2000], 0, Delay::NoDelay),
        ["pass", "reject", "pass"]
    );
    // 1r/m → 1000/60 = 16 milli-requests per second (truncated), so a full request drains
    // after 62.5 s, not 60 s: exactly what nginx does.
    let z = Zone::new(16, 10);
    assert_eq!(
        run(&z, &[0, 60_000, 62_499, 62_500], 0, Delay::NoDelay),
        ["pass", "reject", "reject", "pass"]
    );
}

#[test]
fn keys_are_independent() {
    let z = Zone::new(R10S, 1000);
    assert_eq!(z.check(b"a", 0, 0, Delay::NoDelay), Decision::Pass);
    assert_eq!(z.check(b"b", 0, 0, Delay::NoDelay), Decision::Pass);
    assert!(matches!(
        z.check(b"a", 1, 0, Delay::NoDelay),
        Decision::Reject { .. }
    ));
    assert_eq!(z.len(), 2);
}

#[test]
fn retry_after_is_exactly_when_the_key_passes_again() {
    for (rate, burst, delay) in [
        (R10S, 0, Delay::NoDelay),
        (R10S, 20, Delay::NoDelay),
        (500, 3, Delay::After(1)),
        (16, 0, Delay::NoDelay),
        (123_456, 7, Delay::After(0)),
    ] {
        let z = Zone::with_shards(rate, 10, 1);
        let mut now = 1_000_000;
        let mut retry = None;
        // Fill the bucket until refused.
        for _ in 0..1000 {
            if let Decision::Reject { retry_after } = z.check(b"k", now, burst, delay) {
                retry = Some(retry_after);
                break;
            }
            now += 1;
        }
        let retry = retry.expect("the bucket fills up").as_millis() as u64;
        assert!(retry >= 1);
        // A moment earlier is still refused (refusals change nothing, so probing is safe) ...
        if retry > 1 {
            assert!(
                matches!(
                    z.check(b"k", now + retry - 1, burst, delay),
                    Decision::Reject { .. }
                ),
                "rate {rate} burst {burst}: refused until {retry} ms"
            );
        }
        // ... and at retry_after it passes.
        assert!(
            !matches!(
                z.check(b"k", now + retry, burst, delay),
                Decision::Reject { .. }
            ),
            "rate {rate} burst {burst}: should pass after {retry} ms"
        );
    }
}

#[test]
fn a_full_zone_forgets_the_least_recently_used_key() {
    let z = Zone::with_shards(1000, 2, 1);
    let nd = Delay::NoDelay;
    assert_eq!(z.check(b"a", 0, 0, nd), Decision::Pass);
    assert_eq!(z.check(b"b", 0, 0, nd), Decision::Pass);
    // "a" is used again (refused, which still counts as use), so "b" is the oldest.
    assert!(matches!(z.check(b"a", 10, 0, nd), Decision::Reject { .. }));
    assert_eq!(z.check(b"c", 20, 0, nd), Decision::Pass);
    assert_eq!(z.len(), 2);
    assert_eq!(z.counters().evicted, 1);
    // "b" was forgotten: it starts afresh and passes although its 1r/s has not drained.
    assert_eq!(z.check(b"b", 30, 0, nd), Decision::Pass);
    // That evicted "a"; "c" is still limited.
    assert!(matches!(z.check(b"c", 40, 0, nd), Decision::Reject { .. }));
}

#[test]
fn idle_drained_states_expire_when_new_keys_arrive() {
    let z = Zone::with_shards(R10S, 100, 1);
    z.check(b"old", 0, 0, Delay::NoDelay);
    z.check(b"new", 59_999, 0, Delay::NoDelay);
    assert_eq!(z.len(), 2, "not idle for 60 s yet");
    z.check(b"newer", 60_000, 0, Delay::NoDelay);
    assert_eq!(z.len(), 2, "\"old\" was idle 60 s and drained");
    assert_eq!(z.counters().evicted, 0, "expiry is not a forced eviction");
}

#[test]
fn clock_jumps_backwards_do_not_refill_the_bucket() {
    let z = Zone::new(R10S, 10);
    assert_eq!(z.check(b"k", 10_000, 0, Delay::NoDelay), Decision::Pass);
    // A small backwards step counts as no time passing.
    assert!(matches!(
        z.check(b"k", 9_990, 0, Delay::NoDelay),
        Decision::Reject { .. }
    ));
}

#[test]
fn zone_size_maps_to_nginx_state_count() {
    assert_eq!(Zone::keys_for_size(10 << 20), 81_920);
    assert_eq!(Zone::keys_for_size(32 << 10), 256);
    assert_eq!(Zone::keys_for_size(0), 1);
}

#[test]
fn reload_keeps_state_and_counters_and_applies_the_new_rate() {
    let z = Zone::new(1000, 10);
    assert_eq!(z.check(b"k", 0, 0, Delay::NoDelay), Decision::Pass);
    assert!(matches!(
        z.check(b"k", 100, 0, Delay::NoDelay),
        Decision::Reject { .. }
    ));
    z.set_rate(R10S);
    assert_eq!(z.rate_milli_per_sec(), R10S);
    // At 10r/s, 100 ms drained the request.
    assert_eq!(z.check(b"k", 100, 0, Delay::NoDelay), Decision::Pass);
    let c = z.counters();
    assert_eq!((c.passed, c.rejected), (2, 1));
}

#[test]
fn config_delay_converts() {
    use crate::config::LimitDelay;
    assert_eq!(Delay::from(LimitDelay::NoDelay), Delay::NoDelay);
    assert_eq!(Delay::from(LimitDelay::AfterExcess(3)), Delay::After(3));
}

#[test]
fn concurrent_checks_on_many_keys_are_all_counted() {
    let z = Arc::new(Zone::new(R10S, 10_000));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let z = Arc::clone(&z);
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let key = format!("client-{}", (t * 5_000 + i) % 500);
                    z.check(key.as_bytes(), i / 10, 5, Delay::NoDelay);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let c = z.counters();
    assert_eq!(c.passed + c.delayed + c.rejected, 20_000);
    assert!(c.rejected > 0 && c.passed > 0);
    assert_eq!(z.len(), 500);
}

#[test]
fn delays_are_computed_from_the_stored_excess() {
    // After a burst without nodelay, a later request's delay shrinks by what has drained.
    let z = Zone::new(R10S, 10);
    let d0 = Delay::After(0);
    for _ in 0..4 {
        z.check(b"k", 0, 10, d0);
    }
    // Stored excess 3000 at t=0; at t=150: 3000 - 1500 + 1000 = 2500 → 250 ms.
    assert_eq!(z.check(b"k", 150, 10, d0), Decision::Delay(ms(250)));
}
