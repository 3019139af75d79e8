//! The detector's stories, and the laws of the module docs under random event sequences.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::{
    ConsecutiveRule, EjectionCap, FailurePercentageRule, GrpcCode, Percentage, SuccessRateRule,
    test_rng::SplitMix64,
};

const S: Duration = Duration::from_secs(1);

fn pct(p: u32) -> Percentage {
    Percentage::from_percent(p).unwrap()
}

fn rule(threshold: u32) -> Option<ConsecutiveRule> {
    Some(ConsecutiveRule {
        threshold,
        enforcing: Percentage::HUNDRED,
    })
}

/// Only the rules a test names; 30 s base, 300 s max, 10 s interval, 50 % cap.
fn config() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: None,
        max_ejection_percent: pct(50),
        ..OutlierDetection::default()
    }
}

fn detector(config: OutlierDetection, hosts: u32, now: Instant) -> OutlierDetector<u32> {
    let mut d = OutlierDetector::new(config, now);
    assert!(d.set_hosts(0..hosts, now).is_empty());
    d
}

fn fail_n(
    d: &mut OutlierDetector<u32>,
    host: u32,
    o: Outcome,
    n: u32,
    now: Instant,
) -> Vec<OutlierEvent<u32>> {
    (0..n).filter_map(|_| d.record(&host, o, now, 0)).collect()
}

fn ejected(host: u32, reason: EjectionReason, until: Instant) -> OutlierEvent<u32> {
    OutlierEvent::Ejected {
        host,
        reason,
        until,
    }
}

#[test]
fn five_5xx_in_a_row_eject_and_a_success_in_between_forgives() {
    let t0 = Instant::now();
    let mut d = detector(
        OutlierDetection {
            consecutive_5xx: rule(5),
            ..config()
        },
        4,
        t0,
    );
    assert!(fail_n(&mut d, 0, Outcome::http(500), 4, t0).is_empty());
    assert_eq!(d.record(&0, Outcome::http(200), t0, 0), None);
    // 404 is the caller's problem: a success for health.
    assert!(fail_n(&mut d, 0, Outcome::http(500), 4, t0).is_empty());
    assert_eq!(d.record(&0, Outcome::http(404), t0, 0), None);
    let events = fail_n(&mut d, 0, Outcome::grpc(GrpcCode::Internal), 5, t0);
    assert_eq!(
        events,
        [ejected(0, EjectionReason::Consecutive5xx, t0 + 30 * S)]
    );
    assert!(d.is_ejected(&0) && !d.is_ejected(&1));
    // Outcomes of requests still in flight to an ejected host are ignored.
    assert!(fail_n(&mut d, 0, Outcome::http(500), 10, t0).is_empty());
    assert_eq!(
        d.poll_timeout(),
        Some(t0 + 10 * S),
        "the interval tick comes first"
    );
}

#[test]
fn a_plain_500_breaks_a_gateway_failure_streak_but_counts_as_5xx() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_gateway_failure: rule(3),
        consecutive_5xx: rule(10),
        ..config()
    };
    let mut d = detector(c, 4, t0);
    assert!(fail_n(&mut d, 1, Outcome::http(503), 2, t0).is_empty());
    assert!(fail_n(&mut d, 1, Outcome::http(500), 1, t0).is_empty());
    assert!(fail_n(&mut d, 1, Outcome::http(502), 2, t0).is_empty());
    let e = fail_n(&mut d, 1, Outcome::grpc(GrpcCode::Unavailable), 1, t0);
    assert_eq!(
        e,
        [ejected(
            1,
            EjectionReason::ConsecutiveGatewayFailure,
            t0 + 30 * S
        )]
    );
}

#[test]
fn without_the_split_local_failures_are_5xx_and_gateway_errors() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: rule(3),
        consecutive_local_origin_failure: rule(1),
        ..config()
    };
    let mut d = detector(c, 4, t0);
    // The local-origin rule is not used without the split.
    assert!(fail_n(&mut d, 2, Outcome::ConnectFailure, 2, t0).is_empty());
    let e = fail_n(&mut d, 2, Outcome::Timeout, 1, t0);
    assert_eq!(e, [ejected(2, EjectionReason::Consecutive5xx, t0 + 30 * S)]);
}

#[test]
fn with_the_split_local_failures_only_count_as_local_origin() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: rule(2),
        consecutive_local_origin_failure: rule(3),
        split_external_local_origin_errors: true,
        ..config()
    };
    let mut d = detector(c, 4, t0);
    assert!(fail_n(&mut d, 0, Outcome::http(500), 1, t0).is_empty());
    // Local failures neither add to nor reset the 5xx streak...
    assert!(fail_n(&mut d, 0, Outcome::Reset, 2, t0).is_empty());
    // ...and any response, even a 5xx, shows the connection works and resets theirs.
    let e = fail_n(&mut d, 0, Outcome::http(500), 1, t0);
    assert_eq!(e, [ejected(0, EjectionReason::Consecutive5xx, t0 + 30 * S)]);
    assert!(fail_n(&mut d, 1, Outcome::ConnectFailure, 2, t0).is_empty());
    assert!(fail_n(&mut d, 1, Outcome::http(200), 1, t0).is_empty());
    assert!(fail_n(&mut d, 1, Outcome::ConnectFailure, 2, t0).is_empty());
    let e = fail_n(&mut d, 1, Outcome::RefusedStream, 1, t0);
    assert_eq!(
        e,
        [ejected(
            1,
            EjectionReason::ConsecutiveLocalOriginFailure,
            t0 + 30 * S
        )]
    );
}

#[test]
fn an_unenforced_trigger_restarts_the_count() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: Some(ConsecutiveRule {
            threshold: 2,
            enforcing: pct(50),
        }),
        ..config()
    };
    let mut d = detector(c, 4, t0);
    // Draws below 500,000 ppm enforce, above do not.
    assert_eq!(d.record(&0, Outcome::http(500), t0, 0), None);
    let mut not_enforced = None;
    let mut enforced = None;
    let mut rng = SplitMix64::new(9);
    while not_enforced.is_none() || enforced.is_none() {
        let r = rng.next();
        let first = Draws::new(r).next().unwrap();
        if pct(50).sample(first) {
            enforced.get_or_insert(r);
        } else {
            not_enforced.get_or_insert(r);
        }
    }
    assert_eq!(
        d.record(&0, Outcome::http(500), t0, not_enforced.unwrap()),
        None
    );
    // The streak restarted: one more failure is not enough, two are.
    assert_eq!(
        d.record(&0, Outcome::http(500), t0, enforced.unwrap()),
        None
    );
    assert!(
        d.record(&0, Outcome::http(500), t0, enforced.unwrap())
            .is_some()
    );
}

#[test]
fn the_cap_follows_envoy_and_ejects_at_least_one_host() {
    let t0 = Instant::now();
    // 20 % of 10 hosts: two ejections, the third is skipped.
    let c = OutlierDetection {
        consecutive_5xx: rule(1),
        max_ejection_percent: pct(20),
        ..config()
    };
    let mut d = detector(c.clone(), 10, t0);
    for h in 0..5 {
        d.record(&h, Outcome::http(500), t0, 0);
    }
    assert_eq!(d.ejected_count(), 2);
    assert!(d.is_ejected(&0) && d.is_ejected(&1) && !d.is_ejected(&2));
    assert_eq!(d.ejected_hosts().copied().collect::<Vec<_>>(), vec![0, 1]);
    // Istio's default 10 % of 3 hosts rounds to zero: one host is ejected anyway, not two.
    let mut d = detector(
        OutlierDetection {
            max_ejection_percent: pct(10),
            ..c.clone()
        },
        3,
        t0,
    );
    assert!(d.record(&0, Outcome::http(500), t0, 0).is_some());
    assert_eq!(d.record(&1, Outcome::http(500), t0, 0), None);
    assert_eq!(d.ejected_count(), 1);
    // 100 % can eject every host.
    let mut d = detector(
        OutlierDetection {
            max_ejection_percent: pct(100),
            ..c
        },
        3,
        t0,
    );
    for h in 0..3 {
        d.record(&h, Outcome::http(500), t0, 0);
    }
    assert_eq!(d.ejected_count(), 3);
}

#[test]
fn the_strict_cap_never_exceeds_the_percentage_and_one_host_always_stays() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: rule(1),
        max_ejection_percent: pct(10),
        ejection_cap: EjectionCap::Strict,
        ..config()
    };
    // 10 % of 3 hosts rounds to zero: nothing is ejected.
    let mut d = detector(c.clone(), 3, t0);
    assert_eq!(d.record(&0, Outcome::http(500), t0, 0), None);
    // 100 % still leaves one host in service.
    let mut d = detector(
        OutlierDetection {
            max_ejection_percent: pct(100),
            ..c
        },
        3,
        t0,
    );
    for h in 0..3 {
        d.record(&h, Outcome::http(500), t0, 0);
    }
    assert_eq!(d.ejected_count(), 2);
    assert!(!d.is_ejected(&2));
}

#[test]
fn the_effective_cap_by_cluster_size() {
    let envoy = OutlierDetection {
        max_ejection_percent: pct(10),
        ..config()
    };
    let strict = OutlierDetection {
        ejection_cap: EjectionCap::Strict,
        ..envoy.clone()
    };
    for (hosts, by_envoy, by_strict) in [(0, 0, 0), (1, 1, 0), (3, 1, 0), (10, 1, 1), (25, 2, 2)] {
        assert_eq!(envoy.max_ejected_hosts(hosts), by_envoy, "{hosts} hosts");
        assert_eq!(strict.max_ejected_hosts(hosts), by_strict, "{hosts} hosts");
    }
    let all = OutlierDetection {
        max_ejection_percent: pct(100),
        ..envoy
    };
    assert_eq!(all.max_ejected_hosts(4), 4);
}

#[test]
fn ejections_grow_while_a_host_flaps_and_shrink_while_it_behaves() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: rule(1),
        max_ejection_time: 80 * S,
        ..config()
    };
    let mut d = detector(c, 4, t0);
    let mut now = t0;
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let Some(OutlierEvent::Ejected { until, .. }) = d.record(&0, Outcome::http(500), now, 0)
        else {
            panic!("not ejected");
        };
        lengths.push((until - now).as_secs());
        now = until;
        assert_eq!(d.on_timeout(now, 0), [OutlierEvent::Returned { host: 0 }]);
    }
    // 30, 60, then capped at 80.
    assert_eq!(lengths, [30, 60, 80, 80]);
    // Behaving: each interval tick after a whole interval in service takes one step off the
    // multiplier (3 after the capped growth). The host returned at a tick; the ticks at +10 s
    // and +20 s leave 1, so the next ejection is the second step: 60 s.
    let back = now;
    for secs in [10, 20] {
        now = back + secs * S;
        assert!(d.on_timeout(now, 0).is_empty());
    }
    let Some(OutlierEvent::Ejected { until, .. }) = d.record(&0, Outcome::http(500), now, 0) else {
        panic!("not ejected");
    };
    assert_eq!(until - now, 60 * S);
}

#[test]
fn success_rate_ejects_the_host_far_below_the_mean() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        success_rate: Some(SuccessRateRule::default()),
        ..config()
    };
    let mut d = detector(c, 6, t0);
    // Five hosts at 100 %, one at 50 %: mean 91.7, stdev 18.6, threshold 91.7 − 1.9 × 18.6
    // = 56.3 > 50.
    for h in 0..6 {
        for i in 0..100 {
            let ok = h != 5 || i % 2 == 0;
            d.record(&h, Outcome::http(if ok { 200 } else { 500 }), t0, 0);
        }
    }
    assert_eq!(d.poll_timeout(), Some(t0 + 10 * S));
    assert!(
        d.on_timeout(t0 + 5 * S, 0).is_empty(),
        "early: nothing to do"
    );
    let now = t0 + 10 * S;
    assert_eq!(
        d.on_timeout(now, 0),
        [ejected(5, EjectionReason::SuccessRate, now + 30 * S)]
    );
    assert_eq!(d.poll_timeout(), Some(now + 10 * S));
    // Counts restarted: the next interval has no volume and ejects nobody.
    assert!(d.on_timeout(now + 10 * S, 0).is_empty());
}

#[test]
fn success_rate_needs_enough_hosts_with_enough_volume() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        success_rate: Some(SuccessRateRule::default()),
        ..config()
    };
    let mut d = detector(c, 6, t0);
    for h in 0..6 {
        // Host 4 has too little volume, so only 5 hosts... and host 3 too: 4 < 5.
        let n = if h == 3 || h == 4 { 99 } else { 100 };
        for i in 0..n {
            let ok = h != 5 || i % 2 == 0;
            d.record(&h, Outcome::http(if ok { 200 } else { 500 }), t0, 0);
        }
    }
    assert!(d.on_timeout(t0 + 10 * S, 0).is_empty());
}

#[test]
fn failure_percentage_ejects_at_or_above_the_threshold_worst_first() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        failure_percentage: Some(FailurePercentageRule {
            minimum_hosts: 3,
            ..FailurePercentageRule::default()
        }),
        max_ejection_percent: pct(25),
        ..config()
    };
    let mut d = detector(c, 4, t0);
    // Failure shares: 0 %, 84 %, 85 %, 90 % over 100 requests; 25 % of 4 is one ejection.
    for (h, failures) in [(0, 0), (1, 84), (2, 85), (3, 90)] {
        for i in 0..100 {
            d.record(
                &h,
                Outcome::http(if i < failures { 503 } else { 200 }),
                t0,
                0,
            );
        }
    }
    let now = t0 + 10 * S;
    // 2 and 3 qualify; the cap allows one: the worst, 3.
    assert_eq!(
        d.on_timeout(now, 0),
        [ejected(3, EjectionReason::FailurePercentage, now + 30 * S)]
    );
}

#[test]
fn hosts_that_stay_keep_their_state_and_a_smaller_set_restores_the_cap() {
    let t0 = Instant::now();
    let c = OutlierDetection {
        consecutive_5xx: rule(2),
        ..config()
    };
    let mut d = detector(c, 4, t0);
    d.record(&0, Outcome::http(500), t0, 0);
    assert!(d.set_hosts([3, 2, 1, 0, 7], t0).is_empty());
    assert!(
        d.record(&0, Outcome::http(500), t0, 0).is_some(),
        "the streak survived"
    );
    d.record(&1, Outcome::http(500), t0 + S, 0);
    d.record(&1, Outcome::http(500), t0 + S, 0);
    assert_eq!(d.ejected_count(), 2);
    // Three hosts allow one ejection at 50 %: host 0's ends first, so it returns.
    assert_eq!(
        d.set_hosts([0, 1, 2], t0 + 2 * S),
        [OutlierEvent::Returned { host: 0 }]
    );
    assert!(d.is_ejected(&1) && !d.is_ejected(&0));
    assert_eq!(
        d.record(&9, Outcome::http(500), t0, 0),
        None,
        "unknown hosts are ignored"
    );
    assert!(d.set_hosts([], t0).is_empty());
    assert_eq!(d.poll_timeout(), None);
}

// === laws ===

#[derive(Clone, Debug)]
enum Op {
    Record {
        host: u32,
        outcome: Outcome,
        advance_ms: u64,
        random: u64,
    },
    Tick {
        advance_ms: u64,
        random: u64,
    },
    /// Sleep until the detector's deadline, then handle it.
    Poll {
        random: u64,
    },
    SetHosts {
        mask: u16,
        advance_ms: u64,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::http(200)),
        1 => Just(Outcome::http(404)),
        2 => Just(Outcome::http(500)),
        2 => Just(Outcome::http(503)),
        1 => Just(Outcome::grpc(GrpcCode::Unavailable)),
        1 => Just(Outcome::ConnectFailure),
        1 => Just(Outcome::Timeout),
        1 => Just(Outcome::Reset),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..12, outcome(), 0u64..2_000, any::<u64>())
            .prop_map(|(host, outcome, advance_ms, random)| Op::Record { host, outcome, advance_ms, random }),
        2 => (0u64..20_000, any::<u64>()).prop_map(|(advance_ms, random)| Op::Tick { advance_ms, random }),
        2 => any::<u64>().prop_map(|random| Op::Poll { random }),
        1 => (any::<u16>(), 0u64..1_000).prop_map(|(mask, advance_ms)| Op::SetHosts { mask, advance_ms }),
    ]
}

fn enforcing() -> impl Strategy<Value = Percentage> {
    prop_oneof![
        Just(Percentage::HUNDRED),
        Just(pct(50)),
        Just(Percentage::ZERO)
    ]
}

fn consecutive() -> impl Strategy<Value = Option<ConsecutiveRule>> {
    proptest::option::of((1u32..4, enforcing()).prop_map(|(threshold, enforcing)| {
        ConsecutiveRule {
            threshold,
            enforcing,
        }
    }))
}

fn detection() -> impl Strategy<Value = OutlierDetection> {
    (
        (consecutive(), consecutive(), consecutive(), any::<bool>()),
        proptest::option::of((0u32..3000, 1u32..4, 1u32..8, enforcing()).prop_map(
            |(stdev_factor_milli, minimum_hosts, request_volume, enforcing)| SuccessRateRule {
                stdev_factor_milli,
                minimum_hosts,
                request_volume,
                enforcing,
            },
        )),
        proptest::option::of((0u32..=100, 1u32..4, 1u32..8, enforcing()).prop_map(
            |(threshold, minimum_hosts, request_volume, enforcing)| FailurePercentageRule {
                threshold: pct(threshold),
                minimum_hosts,
                request_volume,
                enforcing,
            },
        )),
        (1u64..20_000, 1u64..40_000, 0u64..120_000, 0u32..=100),
        any::<bool>(),
    )
        .prop_map(
            |((c5xx, gw, local, split), sr, fp, (interval, base, max, cap), strict)| {
                OutlierDetection {
                    consecutive_5xx: c5xx,
                    consecutive_gateway_failure: gw,
                    consecutive_local_origin_failure: local,
                    split_external_local_origin_errors: split,
                    success_rate: sr,
                    failure_percentage: fp,
                    interval: Duration::from_millis(interval),
                    base_ejection_time: Duration::from_millis(base),
                    max_ejection_time: Duration::from_millis(max),
                    max_ejection_percent: pct(cap),
                    ejection_cap: if strict {
                        EjectionCap::Strict
                    } else {
                        EjectionCap::AtLeastOne
                    },
                }
            },
        )
}

/// What the test remembers of one host, from the events alone.
#[derive(Debug, Default)]
struct Seen {
    until: Option<Instant>,
    last_length: Option<Duration>,
    returned_at: Option<Instant>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn outlier_laws(config in detection(), initial in 1u16..4096, ops in proptest::collection::vec(op(), 1..120)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut d: OutlierDetector<u32> = OutlierDetector::new(config.clone(), now);
        let mut hosts: Vec<u32> = (0..12).filter(|b| initial & (1 << b) != 0).collect();
        prop_assert!(d.set_hosts(hosts.clone(), now).is_empty());
        let mut seen: HashMap<u32, Seen> = HashMap::new();
        let base = config.base_ejection_time;
        let cap = config.max_ejection_time.max(base);

        for op in ops {
            let (events, ticked) = match op {
                Op::Record { host, outcome, advance_ms, random } => {
                    now += Duration::from_millis(advance_ms);
                    (d.record(&host, outcome, now, random).into_iter().collect::<Vec<_>>(), false)
                }
                Op::Tick { advance_ms, random } => {
                    now += Duration::from_millis(advance_ms);
                    (d.on_timeout(now, random), true)
                }
                Op::Poll { random } => {
                    if let Some(t) = d.poll_timeout() {
                        now = now.max(t);
                    }
                    (d.on_timeout(now, random), true)
                }
                Op::SetHosts { mask, advance_ms } => {
                    now += Duration::from_millis(advance_ms);
                    hosts = (0..12).filter(|b| mask & (1 << b) != 0).collect();
                    seen.retain(|h, _| hosts.contains(h));
                    (d.set_hosts(hosts.clone(), now), false)
                }
            };

            for e in events {
                match e {
                    OutlierEvent::Ejected { host, until, .. } => {
                        let s = seen.entry(host).or_default();
                        prop_assert!(s.until.is_none(), "ejected twice");
                        let length = until - now;
                        // Law 2: a whole multiple of base within [base, cap], or the cap.
                        prop_assert!(length >= base && length <= cap, "{length:?}");
                        prop_assert!(length == cap || length.as_nanos().is_multiple_of(base.as_nanos()));
                        if let (Some(prev), Some(back)) = (s.last_length, s.returned_at)
                            && now - back < config.interval
                        {
                            prop_assert!(length > prev || (length == cap && prev == cap),
                                "{prev:?} then {length:?}");
                        }
                        s.until = Some(until);
                        s.last_length = Some(length);
                    }
                    OutlierEvent::Returned { host } => {
                        let s = seen.entry(host).or_default();
                        let until = s.until.take();
                        prop_assert!(until.is_some(), "returned without ejection");
                        // Law 3: on_timeout never returns a host early.
                        if ticked {
                            prop_assert!(until.is_some_and(|u| u <= now));
                        }
                        s.returned_at = Some(now);
                    }
                }
            }

            // The events tell the whole story.
            for &h in &hosts {
                prop_assert_eq!(d.is_ejected(&h), seen.get(&h).is_some_and(|s| s.until.is_some()));
            }
            // Law 1.
            let n = hosts.len() as u64;
            let ejected = d.ejected_count() as u64;
            let by_percent = config.max_ejection_percent.of(n);
            match config.ejection_cap {
                EjectionCap::AtLeastOne => prop_assert!(ejected <= by_percent.max(n.min(1))),
                EjectionCap::Strict => {
                    prop_assert!(ejected <= by_percent);
                    prop_assert!(n == 0 || ejected < n);
                }
            }
            // Law 3: after on_timeout(now) nothing due is still ejected.
            let pending: Vec<Instant> = seen.values().filter_map(|s| s.until).collect();
            if ticked {
                prop_assert!(pending.iter().all(|&u| u > now));
            }
            // Law 4.
            match d.poll_timeout() {
                None => prop_assert!(hosts.is_empty()),
                Some(t) => {
                    prop_assert!(pending.iter().all(|&u| t <= u));
                    if ticked {
                        prop_assert!(t > now);
                    }
                }
            }
        }
    }
}
