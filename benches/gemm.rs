//! The bf16 and int8 kernels against f32 on the linear layers of the SmolLM2 KD workload.
//!
//! `cargo bench --bench gemm [-- RUNS]`: for each shape, the three products a linear layer needs in
//! training (forward `x·Wᵀ`, input gradient `g·W`, weight gradient `gᵀ·x`), GFLOP/s as medians of
//! RUNS (default 7). 1020 rows = 4 windows × 255 predicted positions. Then the frozen teacher's
//! forward `x·Wᵀ` in int8 (the kernel this CPU runs: AVX512_VNNI, AVX2 or portable) against the
//! project's f32 layer product (`kernels::linear`), the same shapes, alternating the two.

use candle_core::{Device, Tensor};
use distill_tui::engine::kernels::autocast::bf16_matmul;
use distill_tui::engine::kernels::bf16_gemm;
use distill_tui::engine::kernels::int8_gemm::{self, Int8Kernel, PackedWeight};
use distill_tui::engine::kernels::isa;
use distill_tui::engine::kernels::linear;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args().skip(1).find(|a| a != "--bench").map(|s| s.parse()).transpose()?.unwrap_or(7);
    // DISTILL_SIMD caps the kernels as it does for `distill-tui` (kernels::isa), read here as in main.
    let simd = std::env::var(distill_tui::engine::context::SIMD_ENV).unwrap_or_default();
    let ceiling =
        isa::Ceiling::parse(&simd).ok_or(format!("DISTILL_SIMD=`{simd}`: expected native, avx2 or portable"))?;
    isa::set_ceiling(ceiling);
    println!(
        "kernels capped at: {} (DISTILL_SIMD); f32 GEMM AVX-512 kernels compiled in: {}\n",
        ceiling.name(),
        cfg!(feature = "avx512-gemm")
    );
    let kernel = bf16_gemm::available();
    if !kernel {
        println!("this CPU lacks AVX512_BF16: the bf16 path is emulated with f32 GEMM; f32 only\n");
    }
    let dev = Device::Cpu;
    println!("median of {runs} runs, {} rayon threads\n", rayon::current_num_threads());
    println!("| layer (rows × in → out) | product | candle f32 GFLOP/s | bf16 kernel GFLOP/s | speed-up |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let rows = 1020;
    for (name, k, n) in [
        ("q/o proj", 576, 576),
        ("k/v proj", 576, 192),
        ("gate/up", 576, 1536),
        ("down", 1536, 576),
        ("lm_head (341-row chunk)", 576, 49152),
    ] {
        let m = if n == 49152 { 341 } else { rows };
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let g = Tensor::randn(0f32, 1.0, (m, n), &dev)?;
        let flop = 2.0 * (m * n * k) as f64;
        let wt = w.t()?;
        let gt = g.t()?;
        let xt = x.t()?;
        let cases: [(&str, &Tensor, &Tensor); 3] = [("x·Wᵀ", &x, &wt), ("g·W", &g, &w), ("gᵀ·x", &gt, &x)];
        for (product, a, b) in cases {
            // candle needs contiguous-or-transposed operands; give it what a Linear layer gives it.
            let f32_s = median_secs(runs, || {
                a.matmul(b).unwrap();
            });
            if !kernel {
                println!("| {name} ({m} × {k} → {n}) | {product} | {:.0} | – | – |", flop / f32_s / 1e9);
                continue;
            }
            let bf_s = median_secs(runs, || {
                bf16_matmul(a, b).unwrap();
            });
            println!(
                "| {name} ({m} × {k} → {n}) | {product} | {:.0} | {:.0} | {:.2}× |",
                flop / f32_s / 1e9,
                flop / bf_s / 1e9,
                f32_s / bf_s
            );
        }
        let _ = &xt;
    }
    int8_table(runs)
}

/// The int8 forward against the f32 one, each shape's two measured in alternation.
fn int8_table(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    println!("\nint8 kernel: {}\n", Int8Kernel::detected().name());
    println!("| layer (rows × in → out) | f32 `linear` GFLOP/s | int8 GFLOP/s | int8 / f32 |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, m, k, n) in [
        ("q/o proj", 1020, 576, 576),
        ("k/v proj", 1020, 576, 192),
        ("gate/up", 1020, 576, 1536),
        ("down", 1020, 1536, 576),
        ("lm_head (341-row chunk)", 341, 576, 49152),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let packed = PackedWeight::from_tensor(&w, false)?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let flop = 2.0 * (m * n * k) as f64;
        let (mut f32_t, mut i8_t) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            f32_t.push(median_secs(1, || {
                linear::linear(&x, &w).unwrap();
            }));
            i8_t.push(median_secs(1, || {
                int8_gemm::matmul(&xv, m, &packed);
            }));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (f, i) = (median(f32_t), median(i8_t));
        println!("| {name} ({m} × {k} → {n}) | {:.0} | {:.0} | {:.2}× |", flop / f / 1e9, flop / i / 1e9, f / i);
    }
    Ok(())
}
