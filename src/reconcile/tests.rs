//! Unit tests of the pass plumbing: lineages → planner input → executor jobs, events → the
//! state file, the report → summary and exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};
use tokio::sync::mpsc;

use super::*;
use crate::aliyun::ApiError;
use crate::cert;
use crate::push::TargetReport;
use crate::source::Layout;
use crate::state::{self, Verification as Recorded};
use crate::testca::{Leaf, TestCa};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid timestamp")
}

fn ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| TestCa::new("reconcile unit tests").expect("test CA"))
}

/// A parsed certificate for `names`, valid from `from` to `to` days around [`now`].
fn certificate(names: &[&str], from: i64, to: i64) -> Arc<Certificate> {
    let leaf = Leaf::new(
        names,
        now() + Duration::days(from),
        now() + Duration::days(to),
    );
    let issued = ca().issue(&leaf).expect("leaf");
    Arc::new(
        cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes()).expect("parses"),
    )
}

fn lineage(id: &str, cert: Arc<Certificate>) -> Lineage {
    Lineage {
        id: id.to_string(),
        layout: Layout::Certbot,
        chain_path: PathBuf::from(format!("{id}/fullchain.pem")),
        key_path: PathBuf::from(format!("{id}/privkey.pem")),
        result: Ok(cert),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn api_error(detail: &str) -> Arc<ApiError> {
    Arc::new(ApiError::Transport {
        action: "BatchSetCdnDomainServerCertificate",
        endpoint: "http://127.0.0.1:1".to_string(),
        detail: detail.to_string(),
    })
}

#[test]
fn split_keeps_only_lineages_valid_now_and_says_why_for_the_others() {
    let lineages = [
        lineage("live/ok", certificate(&["ok.example"], -1, 60)),
        lineage("live/expired", certificate(&["old.example"], -90, -1)),
        lineage("live/future", certificate(&["new.example"], 2, 90)),
    ];
    let (valid, invalid) = split(&lineages, now());
    let ids: Vec<&str> = valid.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["live/ok"]);
    assert!(Arc::ptr_eq(
        &valid[0].cert,
        lineages[0].result.as_ref().expect("ok")
    ));
    let bad: Vec<&str> = invalid.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(bad, ["live/expired", "live/future"]);
    for (id, reason) in &invalid {
        assert!(reason.contains(&format!("{id}/fullchain.pem")), "{reason}");
    }
}

/// Two certificates: a wildcard for 7 domains and an exact one for 1 (plus one it loses).
fn two_lineages() -> (Vec<ValidLineage>, Vec<String>) {
    let wildcard = certificate(&["*.a.example"], -1, 60);
    let exact = certificate(&["x.a.example"], -1, 30);
    let valid = vec![
        ValidLineage {
            id: "live/a".into(),
            cert: wildcard,
        },
        ValidLineage {
            id: "live/x".into(),
            cert: exact,
        },
    ];
    let mut domains: Vec<String> = (0..7).map(|i| format!("d{i}.a.example")).collect();
    domains.push("x.a.example".into());
    domains.push("nothing.b.example".into());
    (valid, domains)
}

#[test]
fn jobs_hold_one_upload_per_certificate_and_its_batches_in_order() {
    let (valid, domains) = two_lineages();
    let deployed = BTreeMap::new();
    let params = PlanParams {
        domains: &domains,
        deployed: &deployed,
        now: now(),
        batch: 3,
        force: false,
    };
    let plan = make_plan(&valid, &params);
    assert_eq!(plan.uncovered, ["nothing.b.example"]);
    let jobs = jobs(&plan, &valid, &BTreeMap::new());
    assert_eq!(jobs.len(), 2);
    let sizes: Vec<Vec<usize>> = jobs
        .iter()
        .map(|j| j.batches.iter().map(Vec::len).collect())
        .collect();
    assert_eq!(sizes, [vec![3, 3, 1], vec![1]]);
    assert_eq!(
        jobs[0].batches[0],
        ["d0.a.example", "d1.a.example", "d2.a.example"]
    );
    assert_eq!(jobs[1].batches[0], ["x.a.example"]);
    for (job, v) in jobs.iter().zip(&valid) {
        assert_eq!(job.upload.fingerprint, v.cert.fingerprint);
        assert_eq!(job.upload.not_after, v.cert.not_after);
        assert_eq!(job.upload.chain.pem(), v.cert.chain_pem());
        // Shared, not copied: a first pass over thousands of lineages would otherwise hold
        // every key twice at its peak.
        assert!(Arc::ptr_eq(&job.upload.key, &v.cert.key));
        assert_eq!(
            job.upload.cert_name,
            plan::cert_name(&v.cert.names, v.cert.not_after, &v.cert.fingerprint)
        );
    }
}

#[test]
fn jobs_split_batches_by_the_target_each_domain_routes_to() {
    let (valid, domains) = two_lineages();
    let deployed = BTreeMap::new();
    let params = PlanParams {
        domains: &domains,
        deployed: &deployed,
        now: now(),
        batch: 3,
        force: false,
    };
    let plan = make_plan(&valid, &params);
    // d1 and d4 are another product's (target 2); the rest go to target 1.
    let routes: BTreeMap<String, usize> = domains
        .iter()
        .map(|d| {
            let t = if d == "d1.a.example" || d == "d4.a.example" {
                2
            } else {
                1
            };
            (d.clone(), t)
        })
        .collect();
    let jobs = jobs(&plan, &valid, &routes);
    let shape: Vec<(usize, Vec<Vec<String>>)> =
        jobs.iter().map(|j| (j.target, j.batches.clone())).collect();
    let s = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shape,
        [
            (
                1,
                vec![
                    s(&["d0.a.example", "d2.a.example"]),
                    s(&["d3.a.example", "d5.a.example"]),
                    s(&["d6.a.example"])
                ]
            ),
            (2, vec![s(&["d1.a.example"]), s(&["d4.a.example"])]),
            (1, vec![s(&["x.a.example"])]),
        ]
    );
    // One upload per certificate, shared by its targets' jobs.
    assert!(Arc::ptr_eq(&jobs[0].upload, &jobs[1].upload));
}

#[test]
fn deployed_domains_leave_the_plan_unless_forced() {
    let (valid, domains) = two_lineages();
    let deployed: BTreeMap<String, Fingerprint> = (0..7)
        .map(|i| (format!("d{i}.a.example"), valid[0].cert.fingerprint))
        .collect();
    let mut params = PlanParams {
        domains: &domains,
        deployed: &deployed,
        now: now(),
        batch: 50,
        force: false,
    };
    let plan = make_plan(&valid, &params);
    assert_eq!((plan.pending(), plan.up_to_date.len()), (1, 7));
    params.force = true;
    let forced = make_plan(&valid, &params);
    assert_eq!((forced.pending(), forced.calls()), (8, 2));
}

/// Feeds `events` to `record_events` (as the executor would) and returns what it gives back.
fn record(
    store: StateStore,
    events: Vec<Event<ApiError>>,
) -> (StateStore, Vec<StateError>, Vec<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    for e in events {
        tx.send(e).expect("receiver alive");
    }
    drop(tx);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let progress = Box::new(move |n| sink.lock().expect("not poisoned").push(n));
    let recorded = record_events(rx, store, progress);
    let seen = seen.lock().expect("not poisoned").clone();
    (recorded.store, recorded.errors, seen)
}

#[test]
fn events_are_recorded_and_saved_as_they_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path()).expect("open");
    let fp = certificate(&["a.example"], -1, 60).fingerprint;
    let deployed = |domains: &[&str], id: &str| Event::Deployed {
        target: 0,
        domains: strings(domains),
        cert_name: "a.example-cert".into(),
        fingerprint: fp,
        not_after: now() + Duration::days(60),
        request_id: id.into(),
    };
    let events = vec![
        deployed(&["a.example", "b.example"], "R1"),
        deployed(&["c.example"], "R2"),
        Event::Verified {
            target: 0,
            domains: strings(&["a.example", "b.example"]),
            fingerprint: fp,
        },
        Event::Unverified {
            target: 0,
            domains: strings(&["c.example"]),
            fingerprint: fp,
            last_error: Some(api_error("connection reset")),
        },
    ];
    let (store, errors, progress) = record(store, events);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(progress, [2, 3]);
    // What is on disk equals what is in memory: each event was saved.
    let on_disk = state::load(dir.path()).expect("load");
    assert_eq!(&on_disk, store.state());
    let get = |d: &str| on_disk.domains[d].clone();
    let a = get("a.example").deployed.expect("deployed");
    assert_eq!((a.fingerprint, &*a.request_id), (fp, "R1"));
    assert_eq!(a.verification, Recorded::Verified);
    let c = get("c.example");
    assert_eq!(c.deployed.expect("deployed").verification, Recorded::Failed);
    let message = c.last_error.expect("error").message;
    assert!(message.contains("read-back did not confirm") && message.contains("connection reset"));
    // Only verified deployments count for the next plan when verify is on.
    assert_eq!(
        on_disk
            .deployed_fingerprints(true)
            .keys()
            .collect::<Vec<_>>(),
        ["a.example", "b.example"]
    );
}

#[test]
fn failures_are_recorded_per_domain_with_their_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = StateStore::open(dir.path()).expect("open");
    let fp = certificate(&["a.example"], -1, 60).fingerprint;
    let mut outcomes = BTreeMap::new();
    outcomes.insert(
        "ok.example".to_string(),
        Outcome::Deployed {
            target: 0,
            request_id: "R".into(),
            fingerprint: fp,
            verification: Verification::Verified,
        },
    );
    for (d, detail) in [("f1.example", "refused"), ("f2.example", "refused")] {
        outcomes.insert(
            d.to_string(),
            Outcome::Failed {
                error: api_error(detail),
            },
        );
    }
    outcomes.insert(
        "n.example".to_string(),
        Outcome::NotAttempted {
            cause: api_error("stopped"),
        },
    );
    let report = Report {
        outcomes,
        write_calls: 3,
        read_calls: 1,
        prepare_calls: 0,
        targets: targets(10, 10),
        stopped: None,
    };
    let (errors, saved) = record_failures(&mut store, &report);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(saved, Some(true));
    let on_disk = state::load(dir.path()).expect("load");
    assert!(!on_disk.domains.contains_key("ok.example"));
    for (d, detail) in [
        ("f1.example", "refused"),
        ("f2.example", "refused"),
        ("n.example", "stopped"),
    ] {
        let e = on_disk.domains[d]
            .last_error
            .clone()
            .expect("error recorded");
        assert_eq!(e.kind, "transport");
        assert!(e.message.contains(detail), "{d}: {}", e.message);
    }
}

fn targets(configured: usize, batch_size: usize) -> Vec<TargetReport> {
    vec![TargetReport {
        name: "cdn-batch",
        product: "cdn",
        configured,
        batch_size,
        gone: false,
    }]
}

fn report(
    outcomes: Vec<(&str, Outcome<ApiError>)>,
    configured: usize,
    batch_size: usize,
) -> Report<ApiError> {
    Report {
        outcomes: outcomes
            .into_iter()
            .map(|(d, o)| (d.to_string(), o))
            .collect(),
        write_calls: 4,
        read_calls: 2,
        prepare_calls: 0,
        targets: targets(configured, batch_size),
        stopped: None,
    }
}

fn deployed(verification: Verification<ApiError>) -> Outcome<ApiError> {
    Outcome::Deployed {
        target: 0,
        request_id: "R".into(),
        fingerprint: Fingerprint::from_hex(&"ab".repeat(32)).expect("hex"),
        verification,
    }
}

#[test]
fn a_clean_report_exits_0_and_says_what_was_done() {
    let mut s = Summary {
        up_to_date: 3,
        planned_calls: 2,
        planned_domains: 2,
        ..Summary::default()
    };
    s.add_report(&report(
        vec![
            ("a.example", deployed(Verification::Verified)),
            ("b.example", deployed(Verification::NotChecked)),
        ],
        50,
        50,
    ));
    assert_eq!(
        (s.deployed, s.verified, s.write_calls, s.read_calls),
        (2, 1, 4, 2)
    );
    assert_eq!(s.verdict(), Verdict::Clean);
    let text = s.render();
    assert!(text.contains("plan: 2 domain(s) to update in 2 call(s); 3 up to date; 0 without"));
    assert!(text.contains(
        "pushed: 2 domain(s) deployed (1 confirmed by read-back) in 4 write call(s), 2 read call(s)"
    ));
    assert!(
        !text.contains("note:") && !text.contains("FAILED"),
        "{text}"
    );
}

#[test]
fn failures_unverified_and_lowered_batch_are_named_and_exit_1() {
    let mut s = Summary::default();
    s.add_report(&report(
        vec![
            ("a.example", deployed(Verification::Verified)),
            (
                "b.example",
                deployed(Verification::Unverified { last_error: None }),
            ),
            (
                "c.example",
                Outcome::Failed {
                    error: api_error("refused"),
                },
            ),
        ],
        50,
        10,
    ));
    assert_eq!(s.lowered_batch, Some(10));
    assert_eq!(s.verdict(), Verdict::Problems);
    let text = s.render();
    assert!(text.contains("FAILED b.example: read-back did not see the new certificate in time"));
    assert!(
        text.contains("FAILED c.example: ") && text.contains("refused"),
        "{text}"
    );
    assert!(
        text.contains("10 domains per call were used (set [aliyun] max_domains_per_call = 10)")
    );
}

#[test]
fn uncovered_domains_or_a_stop_exit_1() {
    let uncovered = Summary {
        uncovered: vec![("u.example".into(), "no valid certificate".into())],
        ..Summary::default()
    };
    assert_eq!(uncovered.verdict(), Verdict::Problems);
    assert!(
        uncovered
            .render()
            .contains("UNCOVERED u.example: no valid certificate")
    );
    let mut stopped = Summary::default();
    let mut r = report(
        vec![(
            "n.example",
            Outcome::NotAttempted {
                cause: api_error("bad key"),
            },
        )],
        10,
        10,
    );
    r.stopped = Some(api_error("bad key"));
    stopped.add_report(&r);
    assert_eq!(stopped.verdict(), Verdict::Problems);
    let text = stopped.render();
    // The stopping error once, on the `stopped:` line; the domain refers to it.
    assert!(
        text.contains("stopped: ")
            && text.contains("FAILED n.example: not sent (the run stopped, see above)"),
        "{text}"
    );
    assert_eq!(text.matches("bad key").count(), 1, "{text}");
    assert_eq!(stopped.lowered_batch, None);
}

#[test]
fn planned_summary_names_the_invalid_lineage_that_would_cover_a_domain() {
    let lineages = [
        lineage("live/ok", certificate(&["ok.example"], -1, 60)),
        lineage("live/old", certificate(&["old.example"], -90, -1)),
    ];
    let (valid, invalid) = split(&lineages, now());
    let domains = strings(&["ok.example", "old.example", "none.example"]);
    let deployed = BTreeMap::new();
    let params = PlanParams {
        domains: &domains,
        deployed: &deployed,
        now: now(),
        batch: 10,
        force: false,
    };
    let plan = make_plan(&valid, &params);
    let s = Summary::planned(&lineages, invalid, &plan);
    assert_eq!(
        (s.planned_calls, s.planned_domains, s.up_to_date),
        (1, 1, 0)
    );
    let reasons: BTreeMap<&str, &str> = s
        .uncovered
        .iter()
        .map(|(d, r)| (d.as_str(), r.as_str()))
        .collect();
    assert_eq!(reasons["none.example"], "no valid certificate");
    assert!(reasons["old.example"].contains("covered only by invalid live/old"));
    assert!(s.render().contains("invalid lineage live/old: "));
}

#[test]
fn a_failed_save_is_reported_and_the_record_kept_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let store = StateStore::open(&state_dir).expect("open");
    // The folder vanishes under the running pass: every save fails.
    std::fs::remove_dir_all(&state_dir).expect("remove");
    let fp = certificate(&["a.example"], -1, 60).fingerprint;
    let event = Event::Deployed {
        target: 0,
        domains: strings(&["a.example"]),
        cert_name: "a".into(),
        fingerprint: fp,
        not_after: now() + Duration::days(60),
        request_id: "R1".into(),
    };
    let (store, errors, progress) = record(store, vec![event]);
    assert_eq!(progress, [1]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind(), "state-write");
    let kept = store.state().domains["a.example"].deployed.as_ref();
    assert_eq!(kept.map(|d| d.fingerprint), Some(fp));
}

/// A target that deploys everything it is given.
struct Accepting;

impl Target for Accepting {
    type Error = ApiError;
    fn name(&self) -> &'static str {
        "accepting"
    }
    fn product(&self) -> &'static str {
        "cdn"
    }
    fn limits(&self) -> crate::push::Limits {
        crate::push::Limits {
            domains_per_call: 10,
            writes: crate::push::Rate::per_second(100),
            reads: crate::push::Rate::per_second(100),
            prepares: None,
        }
    }
    async fn deploy(&self, call: &crate::push::Deploy<'_>) -> Result<String, ApiError> {
        Ok(format!("R-{}", call.domains.len()))
    }
    async fn served(&self, _domain: &str) -> Result<Option<Fingerprint>, ApiError> {
        Ok(None)
    }
}

/// Plans `domains` against an empty state and pushes them through [`Accepting`].
async fn push_all(store: StateStore, domains: &[String]) -> Passed {
    let valid = vec![ValidLineage {
        id: "live/a".into(),
        cert: certificate(&["*.a.example"], -1, 60),
    }];
    let routes = BTreeMap::new();
    let per_call = BTreeMap::new();
    let pass = Pass {
        domains,
        routes: &routes,
        per_call: &per_call,
        batch: 2,
        verify: false,
        force: false,
    };
    struct Given(Vec<ValidLineage>);
    impl Holds for Given {
        fn sort(
            &mut self,
            _: &[Lineage],
            _: OffsetDateTime,
        ) -> (Vec<ValidLineage>, Vec<(String, String)>) {
            (std::mem::take(&mut self.0), Vec::new())
        }
    }
    let planned = pass.plan(&[], &mut Given(valid), &State::default(), now());
    let executor =
        crate::push::Executor::new(Arc::new(Accepting), crate::push::Options::new(1, false));
    let progress = Box::new(|_| {});
    pass.push(planned, &executor, store, progress, std::future::pending())
        .await
}

/// Every save of the pass fails (the state folder is gone): the pass deploys, but its
/// verdict is Unrecorded, and the summary names every deployed domain as not recorded.
#[tokio::test]
async fn a_pass_whose_saves_fail_is_unrecorded_and_names_what_was_deployed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let store = StateStore::open(&state_dir).expect("open");
    std::fs::remove_dir_all(&state_dir).expect("remove");
    let domains = strings(&["x.a.example", "y.a.example", "z.a.example"]);
    let passed = push_all(store, &domains).await;
    let s = &passed.summary;
    assert_eq!(s.deployed, 3);
    assert_eq!(s.unrecorded.as_deref(), Some(&domains[..]));
    assert_eq!(s.verdict(), Verdict::Unrecorded);
    assert!(!s.state_errors.is_empty());
    let text = s.render();
    assert!(
        text.contains(
            "3 domain(s) deployed but not recorded: x.a.example, y.a.example, z.a.example"
        ),
        "{text}"
    );
    // The in-memory state kept every record: a later save writes them.
    std::fs::create_dir_all(&state_dir).expect("recreate");
    passed.store.save().expect("saves now");
    assert_eq!(state::load(&state_dir).expect("load").domains.len(), 3);
}

/// The same pass with working saves: recorded, clean.
#[tokio::test]
async fn a_pass_whose_saves_work_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path()).expect("open");
    let domains = strings(&["x.a.example", "y.a.example", "z.a.example"]);
    let passed = push_all(store, &domains).await;
    assert_eq!(passed.summary.unrecorded, None);
    assert_eq!(passed.summary.verdict(), Verdict::Clean);
    assert_eq!(state::load(dir.path()).expect("load").domains.len(), 3);
}
