//! A run's event log, `events.jsonl`: every event its job sent (steps, evaluations, checkpoints,
//! points, log lines, how it ended), one JSON object per line, appended as they happen. The
//! workbench reopens a run by feeding these events to the same code that drew them live, so the
//! curves come back exactly as they were drawn.

use crate::engine::events::JobEvent;
use crate::engine::{Error, Result};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The log file inside a run's folder.
pub const EVENTS_FILE: &str = "events.jsonl";

/// Where a job's events are appended while it records a run (shared by the clones of its context).
#[derive(Clone, Default)]
pub struct Recorder {
    file: Arc<Mutex<Option<std::fs::File>>>,
}

impl Recorder {
    /// Starts appending to `dir/events.jsonl` (emptied first unless `append`).
    pub fn start(&self, dir: &Path, append: bool) -> Result<()> {
        let path = dir.join(EVENTS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        *self.lock() = Some(file);
        Ok(())
    }

    /// Stops recording.
    pub fn stop(&self) {
        *self.lock() = None;
    }

    /// Appends `event` when recording (progress ticks are not kept: they say nothing about the run
    /// once it is over). A write that fails (a full disk) loses the line, not the run.
    pub fn write(&self, event: &JobEvent) {
        if matches!(event, JobEvent::Progress { .. } | JobEvent::Started { .. }) {
            return;
        }
        let mut guard = self.lock();
        if let Some(f) = guard.as_mut() {
            if let Ok(mut line) = serde_json::to_vec(event) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::fs::File>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The events `dir/events.jsonl` holds, in order. A line cut short by a killed process (the last
/// one) is skipped; a folder without a log has no events.
pub fn read_events(dir: &Path) -> Result<Vec<JobEvent>> {
    let path = dir.join(EVENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
