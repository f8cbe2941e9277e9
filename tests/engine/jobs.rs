//! Jobs: events in order, exactly one terminal event, cancellation and panics reported.

use distill_tui::engine::Error;
use distill_tui::jobs::{JobEvent, Settings};
use std::time::Duration;

/// A job with default engine settings (the jobs here use none of them).
fn spawn<F>(kind: &str, description: String, body: F) -> distill_tui::jobs::JobHandle
where
    F: FnOnce(&distill_tui::jobs::JobContext) -> distill_tui::engine::Result<serde_json::Value> + Send + 'static,
{
    distill_tui::jobs::spawn(kind, description, std::sync::Arc::new(Settings::defaults()), body)
}

fn drain(h: &distill_tui::jobs::JobHandle) -> Vec<JobEvent> {
    let mut out = Vec::new();
    while let Ok(e) = h.events.recv_timeout(Duration::from_secs(10)) {
        let end = e.is_terminal();
        out.push(e);
        if end {
            break;
        }
    }
    out
}

#[test]
fn a_job_reports_started_its_events_and_one_summary() {
    let h = spawn("test", "counting".into(), |ctx| {
        for i in 0..3 {
            ctx.progress("count", i + 1, 3, "items");
        }
        Ok(serde_json::json!({ "counted": 3 }))
    });
    let events = drain(&h);
    assert!(matches!(events[0], JobEvent::Started { .. }));
    assert_eq!(events.iter().filter(|e| matches!(e, JobEvent::Progress { .. })).count(), 3);
    match events.last().unwrap() {
        JobEvent::Summary { summary, job } => {
            assert_eq!(summary["counted"], 3);
            assert_eq!(*job, h.id);
        }
        other => panic!("last event {other:?}"),
    }
    let json = serde_json::to_value(&events[1]).unwrap();
    assert_eq!(json["event"], "progress");
    h.join();
}

#[test]
fn cancellation_ends_with_cancelled_and_errors_with_failed() {
    let h = spawn("test", "waits for cancel".into(), |ctx| loop {
        ctx.check()?;
        std::thread::sleep(Duration::from_millis(5));
    });
    h.cancel();
    assert!(matches!(drain(&h).last().unwrap(), JobEvent::Cancelled { .. }));
    let h = spawn("test", "bad".into(), |_| Err(Error::Invalid("no such data file".into())));
    match drain(&h).last().unwrap() {
        JobEvent::Failed { error, bad_input, .. } => assert!(error.contains("no such data file") && *bad_input),
        other => panic!("{other:?}"),
    }
    let h = spawn("test", "panics".into(), |_| panic!("boom"));
    match drain(&h).last().unwrap() {
        JobEvent::Failed { error, bad_input, .. } => assert!(error.contains("boom") && !*bad_input),
        other => panic!("{other:?}"),
    }
}
