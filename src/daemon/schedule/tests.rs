use std::time::Duration;

use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::time::Instant;

use super::*;

const D: Duration = Duration::from_millis(2000);
const RESCAN: Duration = Duration::from_secs(3600);
const WALL: OffsetDateTime = datetime!(2026-11-29 12:00:00 UTC);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A scheduler whose start-up pass has been taken and finished at `t0`, with `outcome`.
fn settled(outcome: PassOutcome) -> (Scheduler, Instant) {
    let t0 = Instant::now();
    let mut s = Scheduler::new(D, RESCAN, t0);
    let pass = s.take_due(t0, WALL).expect("start-up pass is due");
    assert_eq!(pass.reasons(), &[Reason::Requested]);
    s.finish(t0, outcome);
    (s, t0)
}

fn wall_at(t0: Instant, t: Instant) -> OffsetDateTime {
    WALL + (t - t0)
}

#[test]
fn start_up_pass_is_due_at_once_then_the_rescan() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(D, RESCAN, t0);
    let wake = s.next_wake(t0, WALL);
    assert_eq!(
        wake,
        Wake {
            at: t0,
            reason: Reason::Requested
        }
    );
    let pass = s.take_due(t0, WALL).expect("due");
    assert_eq!(pass.primary(), Reason::Requested);
    assert!(!pass.is_rescan());
    s.finish(t0, PassOutcome::default());
    assert_eq!(
        s.next_wake(t0, WALL),
        Wake {
            at: t0 + RESCAN,
            reason: Reason::Rescan
        }
    );
    assert_eq!(s.take_due(t0 + secs(1), WALL), None);
}

#[test]
fn debounce_waits_for_a_quiet_period_after_the_last_event() {
    let (mut s, t0) = settled(PassOutcome::default());
    let e1 = t0 + secs(10);
    s.file_event(e1);
    assert_eq!(
        s.next_wake(e1, WALL),
        Wake {
            at: e1 + D,
            reason: Reason::Debounce
        }
    );
    let e2 = e1 + D / 2;
    s.file_event(e2);
    assert_eq!(s.next_wake(e2, WALL).at, e2 + D);
    // Not yet quiet long enough after e2, although e1 + D has passed.
    assert_eq!(s.take_due(e1 + D, WALL), None);
    assert_eq!(s.take_due(e2 + D - Duration::from_millis(1), WALL), None);
    let pass = s.take_due(e2 + D, WALL).expect("quiet period over");
    assert_eq!(pass.reasons(), &[Reason::Debounce]);
    // Taken: back to the rescan.
    assert_eq!(s.next_wake(e2 + D, WALL).reason, Reason::Rescan);
}

#[test]
fn a_burst_that_never_goes_quiet_is_capped_by_max_wait() {
    let (mut s, t0) = settled(PassOutcome::default());
    let cap = Debounce::new(D).max_wait();
    assert_eq!(cap, secs(60));
    let mut t = t0 + secs(1);
    let first = t;
    while t < first + cap * 2 {
        s.file_event(t);
        assert!(s.next_wake(t, WALL).at <= first + cap);
        t += D / 4;
    }
    assert!(s.take_due(first + cap, WALL).is_some());
}

#[test]
fn max_wait_is_thirty_quiet_periods_when_that_is_longer_than_a_minute() {
    assert_eq!(Debounce::new(secs(10)).max_wait(), secs(300));
    assert_eq!(Debounce::new(Duration::ZERO).max_wait(), secs(60));
}

#[test]
fn pending_events_hold_back_every_other_reason_and_fold_them_into_one_pass() {
    let (mut s, t0) = settled(PassOutcome::default());
    let e = t0 + RESCAN - Duration::from_millis(500);
    s.file_event(e);
    s.request(e);
    // The rescan falls inside the quiet period: wait for the quiet period.
    assert_eq!(
        s.next_wake(e, WALL),
        Wake {
            at: e + D,
            reason: Reason::Debounce
        }
    );
    assert_eq!(s.take_due(t0 + RESCAN, WALL), None);
    let pass = s.take_due(e + D, WALL).expect("due");
    assert_eq!(
        pass.reasons(),
        &[Reason::Requested, Reason::Debounce, Reason::Rescan]
    );
    assert_eq!(pass.primary(), Reason::Requested);
    assert!(pass.is_rescan());
    assert_eq!(s.next_wake(e + D, WALL).at, e + D + RESCAN);
}

#[test]
fn torn_lineage_is_rechecked_after_one_quiet_period() {
    let (mut s, t0) = settled(PassOutcome {
        torn: true,
        ..Default::default()
    });
    assert_eq!(
        s.next_wake(t0, WALL),
        Wake {
            at: t0 + D,
            reason: Reason::TornRecheck
        }
    );
    assert_eq!(s.take_due(t0 + D / 2, WALL), None);
    let pass = s.take_due(t0 + D, WALL).expect("due");
    assert_eq!(pass.reasons(), &[Reason::TornRecheck]);
    s.finish(t0 + D, PassOutcome::default());
    assert_eq!(s.next_wake(t0 + D, WALL).reason, Reason::Rescan);
}

#[test]
fn failed_passes_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
    let (mut s, t0) = settled(PassOutcome::default());
    let failed = PassOutcome {
        failed: true,
        ..Default::default()
    };
    let mut t = t0;
    let mut expected = Vec::new();
    let mut got = Vec::new();
    for i in 0..10u32 {
        s.finish(t, failed.clone());
        let wake = s.next_wake(t, WALL);
        let delay = RETRY_BASE.saturating_mul(1 << i).min(RETRY_CAP);
        if t + delay < t0 + RESCAN {
            assert_eq!(wake.reason, Reason::Retry);
        }
        expected.push(delay);
        got.push(s.retry.due().expect("retry pending") - t);
        t = s.retry.due().expect("retry pending");
        let pass = s.take_due(t, wall_at(t0, t)).expect("retry due");
        assert!(pass.reasons().contains(&Reason::Retry));
    }
    assert_eq!(got, expected);
    assert_eq!(s.failures(), 10);
    s.finish(t, PassOutcome::default());
    assert_eq!(s.failures(), 0);
    s.finish(t, failed);
    assert_eq!(s.retry.due(), Some(t + RETRY_BASE));
}

#[test]
fn retry_never_waits_longer_than_the_rescan_interval() {
    let t0 = Instant::now();
    let short = secs(120);
    let mut b = Backoff::new(short);
    let mut delays = Vec::new();
    for _ in 0..5 {
        delays.push(b.failed(t0) - t0);
    }
    assert_eq!(
        delays,
        [secs(30), secs(60), secs(120), secs(120), secs(120)]
    );
    // A cap below the base is raised to the base.
    assert_eq!(Backoff::new(secs(1)).failed(t0) - t0, RETRY_BASE);
}

#[test]
fn backoff_saturates_after_many_failures() {
    let t0 = Instant::now();
    let mut b = Backoff::new(RETRY_CAP);
    for _ in 0..100 {
        b.failed(t0);
    }
    assert_eq!(b.due(), Some(t0 + RETRY_CAP));
}

#[test]
fn wakes_at_a_future_not_before_plus_grace() {
    let nb = WALL + time::Duration::seconds(90);
    let v = Validity {
        not_before: nb,
        not_after: nb + time::Duration::days(90),
    };
    let (mut s, t0) = settled(PassOutcome {
        validity: vec![v],
        ..Default::default()
    });
    let wake = s.next_wake(t0, WALL);
    assert_eq!(
        wake,
        Wake {
            at: t0 + secs(90) + BOUNDARY_GRACE,
            reason: Reason::NotBefore
        }
    );
    assert_eq!(s.take_due(t0 + secs(90), wall_at(t0, t0 + secs(90))), None);
    let at = wake.at;
    let pass = s.take_due(at, wall_at(t0, at)).expect("due");
    assert_eq!(pass.reasons(), &[Reason::NotBefore]);
    // Handled: the same boundary never wakes us again, even before the pass finishes.
    assert_eq!(s.next_wake(at, wall_at(t0, at)).reason, Reason::Rescan);
    s.finish(
        at,
        PassOutcome {
            validity: vec![v],
            ..Default::default()
        },
    );
    assert_eq!(s.next_wake(at, wall_at(t0, at)).reason, Reason::Rescan);
}

#[test]
fn wakes_when_a_not_after_passes() {
    let na = WALL + time::Duration::minutes(30);
    let v = Validity {
        not_before: WALL - time::Duration::days(60),
        not_after: na,
    };
    let (s, t0) = settled(PassOutcome {
        validity: vec![v],
        ..Default::default()
    });
    let wake = s.next_wake(t0, WALL);
    assert_eq!(
        wake,
        Wake {
            at: t0 + secs(1800) + BOUNDARY_GRACE,
            reason: Reason::NotAfter
        }
    );
}

#[test]
fn earliest_boundary_among_many_wins() {
    let mk = |nb_s: i64, na_s: i64| Validity {
        not_before: WALL + time::Duration::seconds(nb_s),
        not_after: WALL + time::Duration::seconds(na_s),
    };
    let validity = vec![mk(-100, 5000), mk(700, 9000), mk(-5, 400), mk(-50, 600)];
    let (s, t0) = settled(PassOutcome {
        validity,
        ..Default::default()
    });
    assert_eq!(
        s.next_wake(t0, WALL),
        Wake {
            at: t0 + secs(400) + BOUNDARY_GRACE,
            reason: Reason::NotAfter
        }
    );
}

#[test]
fn boundaries_beyond_the_rescan_or_far_future_wake_for_the_rescan() {
    let far = Validity {
        not_before: WALL - time::Duration::days(1),
        not_after: datetime!(9999-12-31 23:59:59 UTC),
    };
    let later = Validity {
        not_before: WALL + time::Duration::days(10),
        not_after: WALL + time::Duration::days(100),
    };
    let (s, t0) = settled(PassOutcome {
        validity: vec![far, later],
        ..Default::default()
    });
    assert_eq!(
        s.next_wake(t0, WALL),
        Wake {
            at: t0 + RESCAN,
            reason: Reason::Rescan
        }
    );
}

#[test]
fn a_boundary_crossed_while_asleep_is_due_in_the_next_pass_once() {
    let nb = WALL + time::Duration::seconds(10);
    let v = Validity {
        not_before: nb,
        not_after: nb + time::Duration::days(1),
    };
    let (mut s, t0) = settled(PassOutcome {
        validity: vec![v],
        ..Default::default()
    });
    // The wall clock jumped (suspend): we wake up much later than planned.
    let late = t0 + secs(500);
    let wall = wall_at(t0, late);
    assert_eq!(
        s.next_wake(late, wall),
        Wake {
            at: late,
            reason: Reason::NotBefore
        }
    );
    let pass = s.take_due(late, wall).expect("due");
    assert_eq!(pass.reasons(), &[Reason::NotBefore]);
    assert!(s.take_due(late, wall).is_none());
}

#[test]
fn a_boundary_already_past_at_the_last_pass_is_not_due() {
    // The pass started after the boundary: it validated with the boundary crossed.
    let v = Validity {
        not_before: WALL - time::Duration::seconds(30),
        not_after: WALL + time::Duration::days(30),
    };
    let (s, t0) = settled(PassOutcome {
        validity: vec![v],
        ..Default::default()
    });
    assert_eq!(s.next_wake(t0, WALL).reason, Reason::Rescan);
}

#[test]
fn same_instant_goes_to_the_higher_priority_reason() {
    let v = Validity {
        not_before: WALL + time::Duration::seconds(29),
        not_after: WALL + time::Duration::days(1),
    };
    // NotBefore + grace = 30 s = RETRY_BASE.
    let (mut s, t0) = settled(PassOutcome {
        validity: vec![v],
        failed: true,
        torn: false,
    });
    assert_eq!(
        s.next_wake(t0, WALL),
        Wake {
            at: t0 + secs(30),
            reason: Reason::Retry
        }
    );
    let at = t0 + secs(30);
    let pass = s.take_due(at, wall_at(t0, at)).expect("due");
    assert_eq!(pass.reasons(), &[Reason::Retry, Reason::NotBefore]);
}

#[test]
fn the_rescan_keeps_its_cadence_and_is_reported_as_such() {
    let (mut s, t0) = settled(PassOutcome::default());
    let at = t0 + RESCAN;
    let pass = s.take_due(at, wall_at(t0, at)).expect("due");
    assert_eq!(pass.reasons(), &[Reason::Rescan]);
    assert!(pass.is_rescan());
    s.finish(at, PassOutcome::default());
    assert_eq!(s.next_wake(at, wall_at(t0, at)).at, at + RESCAN);
}

#[test]
fn reconfigure_applies_a_shorter_rescan_now_and_keeps_pending_events() {
    let (mut s, t0) = settled(PassOutcome::default());
    let e = t0 + secs(5);
    s.file_event(e);
    s.reconfigure(secs(1), secs(60), e);
    assert_eq!(
        s.next_wake(e, WALL),
        Wake {
            at: e + secs(1),
            reason: Reason::Debounce
        }
    );
    s.take_due(e + secs(1), WALL).expect("due");
    assert_eq!(
        s.next_wake(e + secs(1), WALL),
        Wake {
            at: e + secs(60),
            reason: Reason::Rescan
        }
    );
    // A longer rescan does not postpone the one already planned.
    s.reconfigure(secs(1), secs(7200), e + secs(1));
    assert_eq!(s.next_wake(e + secs(1), WALL).at, e + secs(60));
}

#[test]
fn reason_labels_are_distinct() {
    let all = [
        Reason::Requested,
        Reason::Debounce,
        Reason::TornRecheck,
        Reason::Retry,
        Reason::NotBefore,
        Reason::NotAfter,
        Reason::Rescan,
    ];
    let mut labels: Vec<_> = all.iter().map(|r| r.label()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
}

#[derive(Clone, Debug)]
enum Op {
    Event(u64),
    Request(u64),
    Wait(u64),
    Finish {
        torn: bool,
        failed: bool,
        nb: i64,
        na: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..5_000).prop_map(Op::Event),
        (0u64..5_000).prop_map(Op::Request),
        (0u64..8_000_000).prop_map(Op::Wait),
        (
            any::<bool>(),
            any::<bool>(),
            -5_000i64..5_000_000,
            -5_000i64..9_000_000
        )
            .prop_map(|(torn, failed, nb, na)| Op::Finish {
                torn,
                failed,
                nb,
                na
            }),
    ]
}

proptest! {
    /// Whatever happens: waking at `next_wake` finds a pass due that includes its reason
    /// (unless new events came in), nothing is due before it, and right after a pass the
    /// next wake-up is strictly later (no busy loop).
    #[test]
    fn next_wake_and_take_due_agree(ops in proptest::collection::vec(op(), 1..40)) {
        let t0 = Instant::now();
        let mut s = Scheduler::new(D, RESCAN, t0);
        let mut now = t0;
        for op in ops {
            let wall = wall_at(t0, now);
            match op {
                Op::Event(ms) => { now += Duration::from_millis(ms); s.file_event(now); }
                Op::Request(ms) => { now += Duration::from_millis(ms); s.request(now); }
                Op::Wait(ms) => {
                    let wake = s.next_wake(now, wall);
                    let until = now + Duration::from_millis(ms);
                    if wake.at > now {
                        let before = wake.at - Duration::from_millis(1);
                        if before >= now {
                            prop_assert!(s.clone().take_due(before, wall_at(t0, before)).is_none());
                        }
                    }
                    if wake.at <= until {
                        now = now.max(wake.at);
                        let pass = s.take_due(now, wall_at(t0, now));
                        prop_assert!(pass.is_some());
                        let pass = pass.expect("checked above");
                        prop_assert!(pass.reasons().contains(&wake.reason));
                        prop_assert!(s.next_wake(now, wall_at(t0, now)).at > now);
                    } else {
                        now = until;
                    }
                }
                Op::Finish { torn, failed, nb, na } => {
                    let validity = vec![Validity {
                        not_before: wall + time::Duration::seconds(nb),
                        not_after: wall + time::Duration::seconds(na),
                    }];
                    s.finish(now, PassOutcome { validity, torn, failed });
                }
            }
        }
    }
}
