//! The weight side of the int8 product: W quantized per output row, optionally smoothed
//! (SmoothQuant), and packed in the panels each kernel reads.

use super::*;

/// How W's integers are laid out for a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Packing {
    /// `[panel of 32 columns][k / 4][32][4]` bytes, x as `qx + 128` bytes (VNNI).
    Quads,
    /// `[panel of 16 columns][k / 2][16][2]` i16, x as i16 (AVX2).
    Pairs,
}

impl Packing {
    /// Columns per panel.
    pub(super) fn nr(self) -> usize {
        match self {
            Self::Quads => 32,
            Self::Pairs => 16,
        }
    }

    /// Consecutive reduction indices stored together per column.
    pub(super) fn group(self) -> usize {
        match self {
            Self::Quads => 4,
            Self::Pairs => 2,
        }
    }

    /// Rows per register block.
    pub(super) fn mr(self) -> usize {
        match self {
            Self::Quads => 12,
            Self::Pairs => 6,
        }
    }

    /// Reduction indices padded to whole groups.
    pub(super) fn padded(self, k: usize) -> usize {
        k.div_ceil(self.group()) * self.group()
    }

    /// The fast kernel that reads this packing.
    pub(super) fn kernel(self) -> Int8Kernel {
        match self {
            Self::Quads => Int8Kernel::Vnni,
            Self::Pairs => Int8Kernel::Avx2,
        }
    }
}

/// The packed integers of W.
pub(super) enum Panels {
    Quads(Vec<i8>),
    Pairs(Vec<i16>),
}

/// A weight `[out, in]` quantized to int8 per output row and packed for the kernel.
pub struct PackedWeight {
    pub(super) out_dim: usize,
    pub(super) in_dim: usize,
    pub(super) packing: Packing,
    /// Padding columns and reduction indices are zero.
    pub(super) data: Panels,
    /// Per output column (padded to whole panels): the weight row's scale.
    pub(super) scale: Vec<f32>,
    /// Per output column: `128 · Σ_k qw_jk` (the VNNI packing's offset; zeros for pairs).
    pub(super) comp: Vec<i32>,
    /// Per input column: `1 / s_k` of the smoothing that moved `s_k` into W's column k (ones
    /// without smoothing); x is multiplied by it before it is quantized.
    pub(super) inv_smooth: Vec<f32>,
}

/// SmoothQuant's migration strength: 1/2 splits each channel's range evenly between x and W.
pub const SMOOTHING_ALPHA: f32 = 0.5;

/// Per input channel `s_k = amax_k^α / wmax_k^(1−α)` (1 where either maximum is zero or not
/// finite), from the calibration activations' and the weight's largest magnitudes per channel.
pub fn smoothing_factors(act_absmax: &[f32], weight_absmax: &[f32], alpha: f32) -> Vec<f32> {
    act_absmax
        .iter()
        .zip(weight_absmax)
        .map(|(&a, &w)| {
            let s = a.powf(alpha) / w.powf(1.0 - alpha);
            if a > 0.0 && w > 0.0 && s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect()
}

impl PackedWeight {
    /// Quantizes and packs `w`, row-major `[out_dim, in_dim]`, or `[in_dim, out_dim]` when
    /// `transposed` (GPT-2's `Conv1D`), its column k multiplied by `smooth[k]` when given (the
    /// inputs are then divided by it), for this CPU's kernel.
    pub fn new(w: &[f32], out_dim: usize, in_dim: usize, transposed: bool, smooth: Option<&[f32]>) -> Result<Self> {
        Self::for_kernel(w, out_dim, in_dim, transposed, smooth, Int8Kernel::detected())
    }

    /// As [`Self::new`], packed for `kernel` (which need not run on this CPU: the portable path
    /// reads every packing).
    pub fn for_kernel(
        w: &[f32],
        out_dim: usize,
        in_dim: usize,
        transposed: bool,
        smooth: Option<&[f32]>,
        kernel: Int8Kernel,
    ) -> Result<Self> {
        if w.len() != out_dim * in_dim || out_dim == 0 || in_dim == 0 || smooth.is_some_and(|s| s.len() != in_dim) {
            return Err(Error::Invalid(format!(
                "int8 weight: {} values for a [{out_dim}, {in_dim}] matrix ({} smoothing factors)",
                w.len(),
                smooth.map_or(0, |s| s.len())
            )));
        }
        let packing = kernel.layout();
        let factor = |k: usize| smooth.map_or(1.0, |s| s[k]);
        let at = |j: usize, k: usize| factor(k) * if transposed { w[k * out_dim + j] } else { w[j * in_dim + k] };
        let (nr, grp) = (packing.nr(), packing.group());
        let panels = out_dim.div_ceil(nr);
        let panel_len = packing.padded(in_dim) * nr;
        let mut scale = vec![0f32; panels * nr];
        let mut comp = vec![0i32; panels * nr];
        // Each column's integers in the packing's order: element (k, c) of a panel sits at
        // `(k / grp) · nr · grp + c · grp + k % grp`.
        let fill = |p: usize, put: &mut dyn FnMut(usize, i32), scale: &mut [f32], comp: &mut [i32]| {
            for c in 0..nr.min(out_dim - p * nr) {
                let j = p * nr + c;
                let absmax = (0..in_dim).map(|k| at(j, k).abs()).fold(0f32, f32::max);
                let non_finite = (0..in_dim).any(|k| !at(j, k).is_finite());
                let (s, inv) = row_scale(absmax, non_finite);
                let mut sum = 0i32;
                for k in 0..in_dim {
                    let q = quantize(at(j, k), inv);
                    put((k / grp) * nr * grp + c * grp + k % grp, q);
                    sum += q;
                }
                scale[c] = s;
                comp[c] = if packing == Packing::Quads { OFFSET * sum } else { 0 };
            }
        };
        let data = match packing {
            Packing::Quads => {
                let mut data = vec![0i8; panels * panel_len];
                data.par_chunks_mut(panel_len)
                    .zip(scale.par_chunks_mut(nr).zip(comp.par_chunks_mut(nr)))
                    .enumerate()
                    .for_each(|(p, (panel, (s, c)))| fill(p, &mut |i, q| panel[i] = q as i8, s, c));
                Panels::Quads(data)
            }
            Packing::Pairs => {
                let mut data = vec![0i16; panels * panel_len];
                data.par_chunks_mut(panel_len)
                    .zip(scale.par_chunks_mut(nr).zip(comp.par_chunks_mut(nr)))
                    .enumerate()
                    .for_each(|(p, (panel, (s, c)))| fill(p, &mut |i, q| panel[i] = q as i16, s, c));
                Panels::Pairs(data)
            }
        };
        let inv_smooth = (0..in_dim).map(|k| 1.0 / factor(k)).collect();
        Ok(Self { out_dim, in_dim, packing, data, scale, comp, inv_smooth })
    }

    /// The weight of a dense layer as a tensor, `[out, in]` (or `[in, out]` when `transposed`),
    /// without smoothing.
    pub fn from_tensor(w: &Tensor, transposed: bool) -> Result<Self> {
        let (out_dim, in_dim) = Self::dims(w, transposed)?;
        Self::new(&w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim, transposed, None)
    }

    /// As [`Self::from_tensor`], smoothed for the activations `x` `[rows, in]` (a calibration
    /// batch) with [`SMOOTHING_ALPHA`].
    pub fn calibrated(w: &Tensor, transposed: bool, x: &Tensor) -> Result<Self> {
        let (out_dim, in_dim) = Self::dims(w, transposed)?;
        let w = w.to_dtype(DType::F32)?;
        let x = x.to_dtype(DType::F32)?.reshape(((), in_dim))?;
        let act = x.abs()?.max(0)?.to_vec1::<f32>()?;
        let weight = w.abs()?.max(if transposed { 1 } else { 0 })?.to_vec1::<f32>()?;
        let smooth = smoothing_factors(&act, &weight, SMOOTHING_ALPHA);
        Self::new(&w.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim, transposed, Some(&smooth))
    }

    fn dims(w: &Tensor, transposed: bool) -> Result<(usize, usize)> {
        let (rows, cols) = w.dims2()?;
        Ok(if transposed { (cols, rows) } else { (rows, cols) })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The kernel [`matmul`] runs for this weight on this CPU.
    pub fn kernel(&self) -> Int8Kernel {
        let fast = self.packing.kernel();
        match (Int8Kernel::detected(), fast) {
            (Int8Kernel::Vnni, _) | (Int8Kernel::Avx2, Int8Kernel::Avx2) => fast,
            _ => Int8Kernel::Portable,
        }
    }

    /// Bytes held (packed weights, scales, compensations).
    pub fn bytes(&self) -> usize {
        let data = match &self.data {
            Panels::Quads(d) => d.len(),
            Panels::Pairs(d) => 2 * d.len(),
        };
        data + 4 * (self.scale.len() + self.comp.len())
    }
}
