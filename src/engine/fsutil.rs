//! Small file-system helpers shared by every writer in the engine.

use crate::engine::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, then rename.
/// A crash or Ctrl-C leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with a writer callback for large outputs.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    remove_dead_temporaries(&dir, None);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// Removes the temporaries (`.NAME.tmp-PID`) that killed writers left in `dir` (those of `name`
/// only, when given): the files of processes that are gone, never those of a live writer.
pub fn remove_dead_temporaries(dir: &Path, name: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((stem, pid)) = file.strip_prefix('.').and_then(|f| f.rsplit_once(".tmp-")) else { continue };
        if name.is_some_and(|n| n != stem) {
            continue;
        }
        if pid.parse::<u32>().is_ok_and(|pid| !process_alive(pid)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether a process with this id runs on this machine (Linux: `/proc`; elsewhere assumed alive).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Refuses to write `out` when it is one of `inputs` (the same file or folder once resolved):
/// `derive-student T --out T`, `quantize M --out M/model.safetensors`, `export RUN --out RUN`.
pub fn refuse_overwriting_input(out: &Path, inputs: &[&Path], flag: &str) -> Result<()> {
    let resolved = resolve_lexically(out);
    for input in inputs {
        if resolve_lexically(input) == resolved {
            return Err(Error::Invalid(format!(
                "{flag} {} is an input of this command ({}); writing there would destroy what it reads — choose another path",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// `path` made absolute with its existing part canonicalized (links, `..`), the rest appended:
/// the same answer for a path that does not exist yet.
fn resolve_lexically(path: &Path) -> std::path::PathBuf {
    let abs =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// An advisory lock on a folder a job writes (a run's output, an export): held while the job
/// lives, released by the OS when the process ends however it ends (so a killed run's lock is
/// never stale). `.distill-tui.lock` holds the holder's pid, host, start and command, to name it.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// The lock file inside a locked folder.
pub const LOCK_FILE: &str = ".distill-tui.lock";

/// How long [`FolderLock::acquire`] waits for a holder that may be letting go.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl FolderLock {
    /// Locks `dir` (created when missing) for `what`; refuses, naming the holder, while another
    /// process holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // A holder that is letting go (a job of this process that has just ended, a pause
        // followed at once by a resume) is waited for briefly; a holder that stays is refused.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut attempt = file.try_lock();
        while matches!(attempt, Err(std::fs::TryLockError::WouldBlock)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(25));
            attempt = file.try_lock();
        }
        match attempt {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder: serde_json::Value = serde_json::from_str(&holder).unwrap_or_default();
                return Err(Error::Invalid(format!(
                    "{} is in use by process {} on {} since {} ({}); wait for it to finish or stop it, or write elsewhere",
                    dir.display(),
                    holder["pid"],
                    holder["host"].as_str().unwrap_or("this machine"),
                    holder["started"].as_str().unwrap_or("an unknown time"),
                    holder["what"].as_str().unwrap_or("another distill-tui command")
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(format!("locking {}", path.display()), e)),
        }
        let holder = serde_json::json!({
            "pid": std::process::id(),
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
            "started": started_now(),
            "what": what,
        });
        let write = (|| {
            file.set_len(0)?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))?;
            file.write_all(holder.to_string().as_bytes())?;
            file.sync_data()
        })();
        write.map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(Self { _file: file })
    }
}

/// Seconds since the Unix epoch, as text for the lock file.
fn started_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("unix time {secs}")
}

/// Lower-case hexadecimal of `bytes`.
/// Writes tensors as a safetensors file, atomically, one tensor at a time: the whole file is
/// never assembled in memory (a checkpoint's AdamW moments of a 0.5B student are 5 GB; the
/// crate's `serialize` would hold all of it once more). Tensors are laid out by name.
pub fn write_safetensors<V: safetensors::View>(
    path: &Path,
    tensors: &std::collections::BTreeMap<String, V>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if let Some(meta) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(meta));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let len = t.data_len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": t.dtype().to_string(), "shape": t.shape(), "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| Error::Invalid(e.to_string()))?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    text.resize(text.len().next_multiple_of(8), b' ');
    write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(&text)?;
        for t in tensors.values() {
            w.write_all(t.data().as_ref())?;
        }
        w.flush()
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file's contents, streamed, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&h.finalize()))
}
