//! The teacher-logit cache: each training window's top-k teacher logits (see `sparse.rs`),
//! computed once per (teacher, training tokens, seq_len, k) and reused by later steps, epochs and
//! runs. It lives in the user's data directory (`directories`), or `$DISTILL_CACHE_DIR`.
//!
//! Layout: `<root>/teacher-cache/<key>/records.bin`, an append-only log of fixed-size records
//! `[window u32][payload][fnv64 of payload]`, and `meta.json` (what the key stands for). A record
//! torn by a crash fails its checksum and is cut off when the log is next opened. One writer at a
//! time holds an exclusive lock on the log; a second run that finds it locked reads only.

use super::sparse::SparseTeacher;
use crate::engine::fsutil::hex;
use crate::engine::fsutil::write_atomic;
use crate::engine::kernels::autocast::Precision;
use crate::engine::{Error, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What a cache is keyed by.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CacheKey {
    /// Identity of the teacher's weights: canonical paths with sizes and modification times, and the revision.
    pub teacher: String,
    /// sha256 of the training tokens.
    pub tokens_sha256: String,
    pub seq_len: usize,
    pub k: usize,
    pub vocab: usize,
    /// The teacher's matmul precision (absent for f32, so f32 keys are unchanged).
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The block format the teacher's matrices computed in (`gguf`, `q8_0`, …; absent for f32
    /// weights, so older keys are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The record layout: 2 keeps the tail's log-sum-exp of z, z/2 and 2z (layout 1 kept only
    /// the first; its caches live under other digests and are no longer read).
    pub layout: u32,
}

impl CacheKey {
    pub fn new(
        teacher_files: &[PathBuf],
        revision: Option<&str>,
        tokens: &[u32],
        seq_len: usize,
        k: usize,
        vocab: usize,
    ) -> Self {
        let mut id = revision.map(|r| format!("rev={r};")).unwrap_or_default();
        for f in teacher_files {
            // The same files reached by another path (relative, through a symlink) are the same teacher.
            let f = &std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            let meta = std::fs::metadata(f).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            id.push_str(&format!("{}:{len}:{};", f.display(), mtime.map(|d| d.as_nanos()).unwrap_or(0)));
        }
        let mut h = Sha256::new();
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        Self {
            teacher: id,
            tokens_sha256: hex(&h.finalize()),
            seq_len,
            k,
            vocab,
            precision: Precision::F32,
            format: None,
            layout: 2,
        }
    }

    /// The same key for a teacher computed at `precision`.
    pub fn at_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// The same key for a teacher whose matrices compute in a block format.
    pub fn in_format(self, format: Option<String>) -> Self {
        Self { format, ..self }
    }

    fn digest(&self) -> String {
        let text = serde_json::to_string(self).expect("serializable");
        hex(&Sha256::digest(text.as_bytes()))[..24].to_string()
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

pub struct TeacherCache {
    dir: PathBuf,
    file: File,
    writable: bool,
    /// Window → byte offset of its record.
    index: HashMap<u32, u64>,
    positions: usize,
    k: usize,
    vocab: usize,
    /// Records read from disk / computed and appended during this run.
    pub hits: usize,
    pub misses: usize,
}

impl TeacherCache {
    pub fn open(root: &Path, key: &CacheKey) -> Result<Self> {
        let dir = root.join("teacher-cache").join(key.digest());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let meta = dir.join("meta.json");
        if !meta.exists() {
            let described = serde_json::json!({
                "key": key,
                "stored": "per position: the teacher's top-k token ids and logits, and its tail's log-sum-exp of z and of z/2, \
                           all of raw logits (no temperature applied): a run at any temperature rescales them",
            });
            let text = serde_json::to_string_pretty(&described).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&meta, text.as_bytes())?;
        }
        let path = dir.join("records.bin");
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let writable = file.try_lock().is_ok();
        let mut cache = Self {
            dir,
            file,
            writable,
            index: HashMap::new(),
            positions: key.seq_len - 1,
            k: key.k,
            vocab: key.vocab,
            hits: 0,
            misses: 0,
        };
        cache.scan()?;
        Ok(cache)
    }

    fn payload_len(&self) -> usize {
        self.positions * self.k * 8 + self.positions * 12
    }

    fn record_len(&self) -> u64 {
        (4 + self.payload_len() + 8) as u64
    }

    /// Indexes the complete records; cuts a torn tail (only when this process may write).
    fn scan(&mut self) -> Result<()> {
        let len = self.file.metadata().map_err(|e| Error::io("reading the teacher cache", e))?.len();
        let rec = self.record_len();
        let mut buf = vec![0u8; rec as usize];
        let mut off = 0u64;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("reading the teacher cache", e))?;
        while off + rec <= len {
            self.file.read_exact(&mut buf).map_err(|e| Error::io("reading the teacher cache", e))?;
            let payload = &buf[4..4 + self.payload_len()];
            let sum = u64::from_le_bytes(buf[buf.len() - 8..].try_into().expect("8 bytes"));
            if sum != fnv64(payload) {
                break;
            }
            let window = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
            self.index.insert(window, off);
            off += rec;
        }
        if off < len && self.writable {
            self.file.set_len(off).map_err(|e| Error::io("repairing the teacher cache", e))?;
        }
        Ok(())
    }

    pub fn contains(&self, window: usize) -> bool {
        self.index.contains_key(&(window as u32))
    }

    pub fn get(&mut self, window: usize, device: &Device) -> Result<Option<SparseTeacher>> {
        let Some(&off) = self.index.get(&(window as u32)) else { return Ok(None) };
        let mut buf = vec![0u8; self.payload_len()];
        self.file.seek(SeekFrom::Start(off + 4)).map_err(|e| Error::io("reading the teacher cache", e))?;
        self.file.read_exact(&mut buf).map_err(|e| Error::io("reading the teacher cache", e))?;
        let (p, k) = (self.positions, self.k);
        let words = |range: std::ops::Range<usize>| buf[range].chunks_exact(4).map(|c| c.try_into().expect("4 bytes"));
        let idx: Vec<u32> = words(0..p * k * 4).map(u32::from_le_bytes).collect();
        let val: Vec<f32> = words(p * k * 4..p * k * 8).map(f32::from_le_bytes).collect();
        let tail: Vec<f32> = words(p * k * 8..p * k * 8 + p * 4).map(f32::from_le_bytes).collect();
        let more: Vec<f32> = words(p * k * 8 + p * 4..buf.len()).map(f32::from_le_bytes).collect();
        self.hits += 1;
        Ok(Some(SparseTeacher {
            indices: Tensor::from_vec(idx, (p, k), device)?,
            logits: Tensor::from_vec(val, (p, k), device)?,
            tail_lse: Tensor::from_vec(tail, p, device)?,
            tail_lse_at: Tensor::from_vec(more, (p, 2), device)?,
            vocab: self.vocab,
        }))
    }

    /// Appends a window's record (no-op for a read-only cache or a window already present).
    pub fn put(&mut self, window: usize, t: &SparseTeacher) -> Result<()> {
        self.misses += 1;
        if !self.writable || self.contains(window) {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(self.record_len() as usize);
        rec.extend_from_slice(&(window as u32).to_le_bytes());
        for v in t.indices.flatten_all()?.to_vec1::<u32>()? {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        for v in t.logits.flatten_all()?.to_vec1::<f32>()? {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        for v in t.tail_lse.to_vec1::<f32>()?.into_iter().chain(t.tail_lse_at.flatten_all()?.to_vec1::<f32>()?) {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        let sum = fnv64(&rec[4..]);
        rec.extend_from_slice(&sum.to_le_bytes());
        if rec.len() as u64 != self.record_len() {
            return Err(Error::Invalid(format!(
                "teacher cache record has {} bytes, expected {}",
                rec.len(),
                self.record_len()
            )));
        }
        let off = self.file.seek(SeekFrom::End(0)).map_err(|e| Error::io("writing the teacher cache", e))?;
        self.file
            .write_all(&rec)
            .map_err(|e| Error::io(format!("writing the teacher cache in {}", self.dir.display()), e))?;
        self.index.insert(window as u32, off);
        Ok(())
    }

    pub fn windows(&self) -> usize {
        self.index.len()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
