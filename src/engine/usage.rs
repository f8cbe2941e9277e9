//! What this process used: CPU time (user + system, every thread) and peak resident memory, read
//! from the operating system, and a stopwatch for both.

use std::time::Instant;

/// CPU seconds this process has used so far, every thread together (`getrusage`); `None` where
/// the platform does not tell.
pub fn cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes a rusage struct into the zeroed one given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(secs(u.ru_utime) + secs(u.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), when the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Lowers the peak resident size to the current one (Linux: `5` into `/proc/self/clear_refs`), so
/// that [`peak_rss_bytes`] then reports the peak of what follows; false where that is refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Wall and CPU time since it started.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    wall: Instant,
    cpu: Option<f64>,
}

impl Stopwatch {
    pub fn start() -> Self {
        Self { wall: Instant::now(), cpu: cpu_seconds() }
    }

    pub fn wall_seconds(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    /// CPU seconds of the whole process since the start (other work running meanwhile counts).
    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(cpu_seconds()? - self.cpu?)
    }
}
