use std::time::Duration;

use super::*;

fn alert(kind: Kind) -> Alert {
    Alert {
        kind,
        domains: vec!["a.example.com".into(), "b.example.com".into()],
        lineage: "/l/a".into(),
        message: "deployed".into(),
    }
}

fn settings(command: &[&str], secs: u64) -> NotifySettings {
    NotifySettings {
        command: command.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(secs),
    }
}

#[tokio::test]
async fn a_run_gets_the_event_in_its_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = format!(
        "printf '%s %s %s' \"$CERTROTD_EVENT\" \"$CERTROTD_DOMAINS\" \"$CERTROTD_LINEAGE\" > {}",
        out.display()
    );
    run(
        &settings(&["/bin/sh", "-c", &script], 10),
        &alert(Kind::Deployed),
    )
    .await
    .expect("the run succeeds");
    assert_eq!(
        std::fs::read_to_string(&out).expect("written"),
        "deployed a.example.com,b.example.com /l/a"
    );
}

#[tokio::test]
async fn failures_are_told_apart() {
    let e = run(
        &settings(&["/nonexistent/program"], 10),
        &alert(Kind::Invalid),
    )
    .await
    .expect_err("cannot start");
    assert_eq!(e.kind(), "notify-spawn");
    assert!(e.to_string().contains("/nonexistent/program"), "{e}");
    let e = run(
        &settings(&["/bin/sh", "-c", "exit 3"], 10),
        &alert(Kind::Invalid),
    )
    .await
    .expect_err("fails");
    assert_eq!(e.kind(), "notify-failed");
    assert!(e.to_string().contains('3'), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_timeout_is_killed() {
    let e = run(
        &settings(&["/bin/sh", "-c", "exec sleep 600"], 1),
        &alert(Kind::Expiring),
    )
    .await
    .expect_err("killed");
    assert_eq!(e.kind(), "notify-timeout");
}

#[tokio::test]
async fn output_past_the_cap_is_read_and_dropped() {
    let kept = capped(Some(&b"x".repeat(MAX_OUTPUT * 3)[..])).await;
    assert_eq!(kept.len(), MAX_OUTPUT);
}

#[tokio::test]
async fn repeats_coalesce_and_the_waiting_queue_is_bounded() {
    // No workers: nothing is taken from the queue.
    let mut hooks = Hooks::new(&settings(&[], 1));
    hooks.queues = (0..Kind::ALL.len())
        .map(|_| {
            Arc::new(Queue {
                waiting: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
            })
        })
        .collect();
    let mut again = alert(Kind::PushFailed);
    hooks.send(alert(Kind::PushFailed));
    again.message = "later".into();
    hooks.send(again);
    let q = &hooks.queues[Kind::PushFailed.index()];
    {
        let waiting = q.waiting.lock().expect("lock");
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].message, "later");
    }
    for i in 0..MAX_WAITING + 3 {
        let mut a = alert(Kind::PushFailed);
        a.lineage = format!("/l/{i}");
        hooks.send(a);
    }
    assert_eq!(q.waiting.lock().expect("lock").len(), MAX_WAITING);
}
