//! What the engine is given from outside: [`Settings`] (hub, device, cache folder), built once by the
//! front end (`main` reads the environment, tests build them by hand); [`JobContext`], what a job
//! reports through; and [`Monitor`], the progress/cancel handle every long engine function takes
//! (a job's context, a CLI progress line or nothing). Nothing below `main` reads an environment
//! variable to decide what the engine does.

use crate::engine::events::{JobEvent, JobId};
use crate::engine::hub::HubSettings;
use crate::engine::kernels::isa::Ceiling;
use crate::engine::kernels::Kernels;
use crate::engine::{Error, Result};
use candle_core::Device;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// The environment variable `main` reads for [`Settings::device`].
pub const DEVICE_ENV: &str = crate::engine::device::ENV;
/// The environment variable `main` reads for [`Settings::cache_dir`].
pub const CACHE_DIR_ENV: &str = "DISTILL_CACHE_DIR";
/// The environment variable `main` reads for [`Settings::kernels`].
pub const KERNELS_ENV: &str = "DISTILL_KERNELS";
/// The environment variable `main` reads for [`Settings::simd`].
pub const SIMD_ENV: &str = "DISTILL_SIMD";

/// The engine's outside world, passed in.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Which hub, which hub cache, which token, online or not.
    pub hub: HubSettings,
    /// Where training runs: `cpu`, `cuda` or `cuda:N` (checked when a run starts).
    pub device: String,
    /// Root of the project's own caches (the teacher-logit cache).
    pub cache_dir: PathBuf,
    /// The project's fused CPU kernels, or candle's composed ops (a debugging aid).
    pub kernels: Kernels,
    /// The highest instruction set the kernels may use (`native`, `avx2`, `portable`): a process-wide
    /// cap `main` installs once ([`crate::engine::kernels::isa`]), to run another CPU's paths here.
    pub simd: Ceiling,
}

impl Settings {
    /// The settings an unconfigured machine has: the default hub and hub cache, online, the CPU,
    /// the platform's data folder. Reads no environment variable.
    pub fn defaults() -> Self {
        Self::from_vars(|_| None).expect("no variable, nothing to refuse")
    }

    /// Reads the settings from the process environment: the `huggingface_hub` variables (see
    /// [`HubSettings::from_vars`]), `DISTILL_DEVICE` and `DISTILL_CACHE_DIR`. Only `main` calls this.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings through `get` (a variable name → its value); an unknown `DISTILL_KERNELS` or
    /// `DISTILL_SIMD` is refused.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let kernels = match var(KERNELS_ENV) {
            Some(v) => Kernels::parse(&v).ok_or_else(|| {
                Error::Invalid(format!("{KERNELS_ENV}=`{v}`: expected `fused` (the default) or `reference`"))
            })?,
            None => Kernels::Fused,
        };
        let simd = match var(SIMD_ENV) {
            Some(v) => Ceiling::parse(&v).ok_or_else(|| {
                Error::Invalid(format!("{SIMD_ENV}=`{v}`: expected `native` (the default), `avx2` or `portable`"))
            })?,
            None => Ceiling::Native,
        };
        Ok(Self {
            hub: HubSettings::from_vars(&get),
            device: var(DEVICE_ENV).unwrap_or_else(|| "cpu".into()),
            cache_dir: var(CACHE_DIR_ENV).map(PathBuf::from).unwrap_or_else(default_cache_dir),
            kernels,
            simd,
        })
    }

    /// The same settings with the hub `hub`.
    pub fn with_hub(self, hub: HubSettings) -> Self {
        Self { hub, ..self }
    }

    /// The same settings with the cache root `dir`.
    pub fn with_cache_dir(self, dir: impl Into<PathBuf>) -> Self {
        Self { cache_dir: dir.into(), ..self }
    }

    /// The compute device [`Settings::device`] names.
    pub fn device(&self) -> Result<Device> {
        crate::engine::device::parse(&self.device)
    }
}

/// The platform data directory (`~/.local/share/distill-tui` on Linux), else a temporary folder.
fn default_cache_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "distill-tui")
        .map(|p| p.data_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("distill-tui"))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a running job uses to report and to notice cancellation.
#[derive(Clone)]
pub struct JobContext {
    pub id: JobId,
    tx: Sender<JobEvent>,
    cancel: Arc<AtomicBool>,
    settings: Arc<Settings>,
    /// The run's event log, while the job records one (see [`crate::engine::library`]).
    recorder: crate::engine::library::log::Recorder,
}

impl JobContext {
    /// A context whose events go to `tx` (for running a job body on the current thread).
    pub fn new(tx: Sender<JobEvent>, cancel: Arc<AtomicBool>, settings: Arc<Settings>) -> Self {
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), tx, cancel, settings, recorder: Default::default() }
    }

    /// The settings the engine works with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The hub settings (shorthand for `settings().hub`).
    pub fn hub(&self) -> &HubSettings {
        &self.settings.hub
    }

    /// Sends an event (and appends it to the run's event log while one is recorded); a front end
    /// that went away is not an error for the job.
    pub fn emit(&self, event: JobEvent) {
        self.recorder.write(&event);
        let _ = self.tx.send(event);
    }

    /// The run's event log this job appends to.
    pub fn recorder(&self) -> &crate::engine::library::log::Recorder {
        &self.recorder
    }

    pub fn log(&self, message: impl Into<String>) {
        self.emit(JobEvent::Log { job: self.id, message: message.into() });
    }

    pub fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        self.emit(JobEvent::Progress { job: self.id, stage: stage.into(), done, total, unit: unit.into() });
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancellation was requested: call between units of work.
    pub fn check(&self) -> Result<()> {
        self.quiet().check()
    }

    /// The cancellation flag, for engine functions that take one.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// What a [`Monitor`] reports to: a job's events, the CLI's progress bar, a test's recorder.
pub trait Progress: Sync {
    /// `done` of `total` `unit`s of the stage named `stage`.
    fn progress(&self, stage: &str, done: u64, total: u64, unit: &str);
    /// A line for whoever watches (what is about to happen, how long it should take).
    fn note(&self, message: &str);
}

impl Progress for JobContext {
    fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        JobContext::progress(self, stage, done, total, unit)
    }

    fn note(&self, message: &str) {
        self.log(message)
    }
}

/// Progress and cancellation for one piece of engine work (an evaluation, a calibration pass, a
/// comparison): `report(done, total)` under the monitor's stage name and unit, and the cancel flag
/// checked between units of work.
#[derive(Clone)]
pub struct Monitor<'a> {
    cancel: &'a AtomicBool,
    sink: Option<&'a dyn Progress>,
    stage: String,
    unit: &'static str,
}

impl<'a> Monitor<'a> {
    /// Reports nothing; stops when `cancel` is set.
    pub fn silent(cancel: &'a AtomicBool) -> Self {
        Self { cancel, sink: None, stage: String::new(), unit: "windows" }
    }

    /// Reports to `sink` (a job, a CLI progress bar, a test's recorder).
    pub fn new(cancel: &'a AtomicBool, sink: &'a dyn Progress) -> Self {
        Self { sink: Some(sink), ..Self::silent(cancel) }
    }

    /// The same monitor under another stage name (`teacher`, `evaluating q4_0`, ...).
    pub fn stage(&self, name: impl Into<String>) -> Self {
        Self { stage: name.into(), ..self.clone() }
    }

    /// The same monitor counting another unit (`windows` unless told).
    pub fn unit(&self, unit: &'static str) -> Self {
        Self { unit, ..self.clone() }
    }

    pub fn report(&self, done: usize, total: usize) {
        if let Some(sink) = self.sink {
            sink.progress(&self.stage, done as u64, total as u64, self.unit);
        }
    }

    /// Tells whoever watches what is about to happen.
    pub fn note(&self, message: impl AsRef<str>) {
        if let Some(sink) = self.sink {
            sink.note(message.as_ref());
        }
    }

    /// `Err(Cancelled)` once cancellation was requested: call between units of work.
    pub fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The cancellation flag, for engine functions that take one.
    pub fn cancel_flag(&self) -> &'a AtomicBool {
        self.cancel
    }
}

impl JobContext {
    /// A monitor reporting as this job's progress events under `stage`.
    pub fn monitor(&self, stage: impl Into<String>) -> Monitor<'_> {
        Monitor::new(&self.cancel, self).stage(stage)
    }

    /// A monitor that reports nothing but stops with this job.
    pub fn quiet(&self) -> Monitor<'_> {
        Monitor::silent(&self.cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_ceiling_is_read_from_its_variable_and_an_unknown_one_refused() {
        let with = |v: &'static str| Settings::from_vars(move |n| (n == SIMD_ENV).then(|| v.to_string()));
        assert_eq!(Settings::defaults().simd, Ceiling::Native);
        assert_eq!(with("avx2").unwrap().simd, Ceiling::Avx2);
        assert_eq!(with("portable").unwrap().simd, Ceiling::Portable);
        let e = with("avx512").unwrap_err().to_string();
        assert!(e.contains("DISTILL_SIMD=`avx512`") && e.contains("`avx2`"), "{e}");
    }
}
