//! What this process used: CPU time (user + system, every thread) and peak resident memory, read
//! from the operating system, and a stopwatch for both.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// The peaks [`reset_peak_rss`] cleared, folded together.
static CLEARED_PEAK: AtomicU64 = AtomicU64::new(0);

/// The kernel's peak resident size (Linux `VmHWM`), since the process started or the last reset.
fn high_water_mark() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of this process over its whole life (resets included), when the platform
/// tells.
pub fn peak_rss_bytes() -> Option<u64> {
    Some(high_water_mark()?.max(CLEARED_PEAK.load(Ordering::Relaxed)))
}

/// Peak resident memory since the last [`reset_peak_rss`].
pub fn peak_rss_since_reset() -> Option<u64> {
    high_water_mark()
}

/// Lowers the kernel's peak resident size to the current one (Linux: `5` into
/// `/proc/self/clear_refs`), so that [`peak_rss_since_reset`] reports the peak of what follows
/// ([`peak_rss_bytes`] keeps the whole life's); false where that is refused.
pub fn reset_peak_rss() -> bool {
    if let Some(peak) = high_water_mark() {
        CLEARED_PEAK.fetch_max(peak, Ordering::Relaxed);
    }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn a_reset_keeps_the_lifetime_peak_and_cpu_time_grows() {
        let big = vec![1u8; 64 << 20];
        let before = super::peak_rss_bytes().expect("VmHWM on Linux");
        assert!(before >= 64 << 20, "64 MB touched, peak {before}");
        drop(std::hint::black_box(big));
        if !super::reset_peak_rss() {
            eprintln!("skipped the reset check: /proc/self/clear_refs refused");
            return;
        }
        let since = super::peak_rss_since_reset().unwrap();
        let life = super::peak_rss_bytes().unwrap();
        // (VmHWM is the kernel's page-counter estimate: it may read a few pages lower later on.)
        assert!(life >= 64 << 20 && life >= since, "lifetime {life}, before {before}, since the reset {since}");
        let clock = super::Stopwatch::start();
        let mut x = 0u64;
        while clock.wall_seconds() < 0.05 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(clock.cpu_seconds().unwrap() > 0.0);
    }
}
