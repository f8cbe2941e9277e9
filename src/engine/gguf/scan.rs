//! A bounds check of a GGUF header before candle reads it. candle's reader trusts the counts and
//! lengths it finds (a string of 2^40 bytes is allocated as such, and the process aborts); this walk
//! allocates nothing the file cannot back: every count and length is checked against the bytes
//! left, so a corrupt or crafted file is a named error instead of an abort. After candle's read,
//! [`check_extents`] checks the tensors' data: aligned, inside the file, not overlapping.

use candle_core::quantized::gguf_file::Content;
use std::io::{Read, Seek, SeekFrom};

/// Deepest nesting of arrays in metadata that is accepted.
const MAX_DEPTH: usize = 4;
/// Most dimensions of a tensor.
const MAX_DIMS: u32 = 8;

struct Cursor<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Cursor<R> {
    fn need(&self, bytes: u64, what: &str) -> Result<(), String> {
        if bytes > self.len - self.pos {
            return Err(format!(
                "{what} needs {bytes} bytes at offset {} but the file has {} left",
                self.pos,
                self.len - self.pos
            ));
        }
        Ok(())
    }

    fn read<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.read::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.read::<8>(what)?))
    }

    fn skip(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        self.need(bytes, what)?;
        self.r.seek(SeekFrom::Current(bytes as i64)).map_err(|e| format!("{what}: {e}"))?;
        self.pos += bytes;
        Ok(())
    }

    /// A count or length: u32 in GGUF v1, u64 after.
    fn count(&mut self, v1: bool, what: &str) -> Result<u64, String> {
        if v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, v1: bool, what: &str) -> Result<(), String> {
        let n = self.count(v1, what)?;
        self.skip(n, what)
    }

    /// A string read (lossily) when it is at most `max` bytes long, skipped otherwise.
    fn short_string(&mut self, v1: bool, max: u64, what: &str) -> Result<String, String> {
        let n = self.count(v1, what)?;
        self.need(n, what)?;
        if n > max {
            self.skip(n, what)?;
            return Ok(String::new());
        }
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b).map_err(|e| format!("{what}: {e}"))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn value(&mut self, kind: u32, v1: bool, depth: usize, what: &str) -> Result<(), String> {
        let fixed = match kind {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string(v1, what),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{what}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let elem = self.u32(what)?;
                let n = self.count(v1, what)?;
                // Every element takes at least one byte: a count beyond the bytes left is corrupt.
                self.need(n, what)?;
                for _ in 0..n {
                    self.value(elem, v1, depth + 1, what)?;
                }
                return Ok(());
            }
            other => return Err(format!("{what}: unknown metadata value type {other}")),
        };
        self.skip(fixed, what)
    }
}

/// One tensor info of a GGUF header, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// The GGML type id.
    pub ggml_type: u32,
    /// Where in the file the type id is stored.
    pub type_pos: u64,
    /// Where in the file the data offset is stored.
    pub offset_pos: u64,
}

/// Walks the header of the GGUF file `r` (`len` bytes): metadata and tensor infos. Returns every
/// tensor info's name and type (and where the type is stored), in file order.
pub fn scan<R: Read + Seek>(r: R, len: u64) -> Result<Vec<TensorEntry>, String> {
    let mut c = Cursor { r, pos: 0, len };
    c.read::<4>("the magic")?;
    let version = c.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not 1, 2 or 3"));
    }
    let v1 = version == 1;
    let n_tensors = c.count(v1, "the tensor count")?;
    let n_kv = c.count(v1, "the metadata count")?;
    // A metadata entry takes at least 13 bytes, a tensor info at least 17.
    c.need(n_kv.saturating_mul(13).saturating_add(n_tensors.saturating_mul(17)), "the header's entries")?;
    for i in 0..n_kv {
        let what = format!("metadata entry {i}");
        let n = c.count(v1, &what)?;
        c.need(n, &what)?;
        let key = if n <= 256 {
            let mut k = vec![0u8; n as usize];
            c.r.read_exact(&mut k).map_err(|e| format!("{what}: {e}"))?;
            c.pos += n;
            k
        } else {
            c.skip(n, &what)?;
            Vec::new()
        };
        let kind = c.u32(&what)?;
        if key == b"general.alignment" && kind <= 5 {
            // candle divides by it: 0 (or a non-power of two) is a corrupt file.
            let v = match kind {
                0 | 1 => u32::from(c.read::<1>(&what)?[0]),
                2 | 3 => u32::from(u16::from_le_bytes(c.read::<2>(&what)?)),
                _ => c.u32(&what)?,
            };
            if v == 0 || !v.is_power_of_two() {
                return Err(format!("general.alignment = {v} is not a positive power of two"));
            }
            continue;
        }
        c.value(kind, v1, 0, &what)?;
    }
    let mut entries = Vec::new();
    for i in 0..n_tensors {
        let what = format!("tensor info {i}");
        let name = c.short_string(v1, 1024, &what)?;
        let dims = c.u32(&what)?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(format!("{what}: {dims} dimensions (1 to {MAX_DIMS} expected)"));
        }
        let mut elements = 1u64;
        for _ in 0..dims {
            let d = c.count(v1, &what)?;
            elements = elements.checked_mul(d).ok_or_else(|| format!("{what}: its dimensions overflow"))?;
        }
        if elements > len.saturating_mul(8) {
            return Err(format!("{what}: {elements} elements cannot fit in a {len}-byte file"));
        }
        let type_pos = c.pos;
        let ggml_type = c.u32(&what)?;
        entries.push(TensorEntry { name, ggml_type, type_pos, offset_pos: c.pos });
        c.u64(&what)?;
    }
    Ok(entries)
}

/// A reader of a GGUF file that shows other type ids at some tensor infos' type positions:
/// candle's reader knows no IQ4_NL (type 20), so those tensors are read as Q4_0 (type 2, the same
/// 18-byte blocks of 32) and their bytes reinterpreted afterwards. Nothing else is changed.
pub struct Retyped<R> {
    inner: R,
    pos: u64,
    /// (position of a type id, the id shown there).
    patches: Vec<(u64, u32)>,
}

impl<R: Read + Seek> Retyped<R> {
    pub fn new(inner: R, patches: Vec<(u64, u32)>) -> Self {
        Self { inner, pos: 0, patches }
    }
}

impl<R: Read> Read for Retyped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for &(at, id) in &self.patches {
            for (k, b) in id.to_le_bytes().iter().enumerate() {
                let p = at + k as u64;
                if p >= start && p < end {
                    buf[(p - start) as usize] = *b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl<R: Seek> Seek for Retyped<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// Checks the data of every tensor candle read: each starts on the file's alignment, lies inside
/// the file, and no two overlap.
pub fn check_extents(content: &Content, len: u64) -> Result<(), String> {
    let align = match content.metadata.get("general.alignment") {
        Some(v) => v.to_u32().map(u64::from).unwrap_or(32),
        None => 32,
    }
    .max(1);
    let mut spans = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = elems / block.max(1) * info.ggml_dtype.type_size() as u64;
        let start = content.tensor_data_offset.saturating_add(info.offset);
        if info.offset % align != 0 {
            return Err(format!(
                "tensor `{name}` starts at data offset {}, not a multiple of the alignment {align}",
                info.offset
            ));
        }
        let end = start.saturating_add(bytes);
        if end > len {
            return Err(format!("tensor `{name}` ends at byte {end}, past the end of the {len}-byte file"));
        }
        spans.push((start, end, name.as_str()));
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("tensors `{}` and `{}` overlap in the file", w[0].2, w[1].2));
        }
    }
    Ok(())
}
