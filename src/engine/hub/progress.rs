//! Download progress, delivered to a callback at a bounded rate.

use std::time::{Duration, Instant};

/// How far the download of one file has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Repo-relative file name, e.g. `model.safetensors`.
    pub file: String,
    /// Bytes of the file on disk so far (a resumed download starts above 0).
    pub bytes: u64,
    /// Size of the file in bytes.
    pub total: u64,
}

/// Minimum time between two callbacks for one file (at most 20 a second), except for the
/// first and the final one, which are always delivered.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// Adapts a `&dyn Fn(&DownloadProgress)` callback to `hf_hub`'s [`hf_hub::api::Progress`],
/// throttled to one call per [`PROGRESS_INTERVAL`], plus always the first and the final one.
pub struct ProgressReporter<'a> {
    state: DownloadProgress,
    callback: &'a dyn Fn(&DownloadProgress),
    /// When the last callback was made and with how many bytes.
    last: Option<(Instant, u64)>,
}

impl<'a> ProgressReporter<'a> {
    /// A reporter for the download of `file`.
    pub fn new(file: impl Into<String>, callback: &'a dyn Fn(&DownloadProgress)) -> Self {
        let state = DownloadProgress { file: file.into(), bytes: 0, total: 0 };
        ProgressReporter { state, callback, last: None }
    }

    fn emit(&mut self, is_final: bool) {
        let now = Instant::now();
        let due = match self.last {
            None => true,
            // The final report is skipped only when it would repeat the previous one exactly.
            Some((_, bytes)) if is_final => bytes != self.state.bytes,
            Some((at, _)) => now.duration_since(at) >= PROGRESS_INTERVAL,
        };
        if due {
            (self.callback)(&self.state);
            self.last = Some((now, self.state.bytes));
        }
    }
}

impl hf_hub::api::Progress for ProgressReporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        // hf-hub calls `init` again before each (re)try, then `update` with the resume offset.
        self.state.total = size as u64;
        self.state.bytes = 0;
        if self.last.is_none() {
            self.emit(false);
        }
    }

    fn update(&mut self, size: usize) {
        self.state.bytes += size as u64;
        self.emit(false);
    }

    fn finish(&mut self) {
        self.emit(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::api::Progress;
    use std::cell::RefCell;

    #[test]
    fn throttled_but_keeps_the_first_and_final_reports() {
        let seen = RefCell::new(Vec::new());
        let record = |p: &DownloadProgress| seen.borrow_mut().push((p.file.clone(), p.bytes, p.total));
        let mut reporter = ProgressReporter::new("big.bin", &record);
        let started = Instant::now();
        reporter.init(1_000_000, "big.bin");
        reporter.update(0);
        for _ in 0..10_000 {
            reporter.update(100);
        }
        reporter.finish();
        let allowed = 2 + (started.elapsed().as_millis() / PROGRESS_INTERVAL.as_millis()) as usize + 1;
        let seen = seen.into_inner();
        assert_eq!(seen[0], ("big.bin".to_string(), 0, 1_000_000));
        assert_eq!(seen.last().unwrap(), &("big.bin".to_string(), 1_000_000, 1_000_000));
        assert!(seen.len() <= allowed, "{} reports, at most {allowed} allowed", seen.len());
    }

    #[test]
    fn a_retry_restarts_from_the_resume_offset() {
        let seen = RefCell::new(Vec::new());
        let record = |p: &DownloadProgress| seen.borrow_mut().push(p.bytes);
        let mut reporter = ProgressReporter::new("f", &record);
        reporter.init(10, "f");
        reporter.update(4);
        reporter.init(10, "f");
        reporter.update(4);
        reporter.update(6);
        reporter.finish();
        assert_eq!(seen.into_inner().last(), Some(&10));
    }
}
