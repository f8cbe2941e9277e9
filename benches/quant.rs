//! Quantization throughput (Mparams/s), quantized evaluation speed (tokens/s) against the first
//! format, and serving speed: prefill of 512 tokens and KV-cache decode of 128 (llama-bench's
//! pp512 / tg128), medians.
//!
//! `cargo bench --bench quant -- MODEL TEXT FORMATS [TOKENS] [RUNS]`, e.g.
//! `cargo bench --bench quant -- offline/SmolLM2-135M-Instruct-dequantized ../shared/data/austen/persuasion.txt
//! f32,q8_0,q6_k,q4_k,q4_0,int4-g64 1024 3`. Prints a markdown table of medians over RUNS runs.

use distill_tui::engine::context::Monitor;
use distill_tui::engine::context::Settings;
use distill_tui::engine::eval::{evaluate_tokens, EvalOptions};
use distill_tui::engine::generate::{measure_latency, LatencyOptions};
use distill_tui::engine::loader::{load_model, LoadOptions};
use distill_tui::engine::quant::{quantize_model, QuantFormat, QuantOptions};
use distill_tui::engine::source::resolve;
use distill_tui::engine::tokenizer::encode_plain;
use std::sync::atomic::AtomicBool;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [model, text, formats, rest @ ..] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench quant -- MODEL TEXT FORMATS [TOKENS] [RUNS]");
        return Ok(());
    };
    let tokens_n: usize = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let runs: usize = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let m = load_model(
        &resolve(model, &Settings::from_env().expect("the environment's settings").hub, &|_| {})?,
        &LoadOptions::default(),
    )?;
    let mut tokens = encode_plain(m.tokenizer()?, &std::fs::read_to_string(text)?)?;
    tokens.truncate(tokens_n);
    let cancel = AtomicBool::new(false);
    let opts = EvalOptions { seq_len: 512, ..Default::default() };
    let latency = LatencyOptions { prefill: 512, decode: 128, repeats: runs };
    let params = m.parameter_count() as f64 / 1e6;
    println!("{model}: {params:.1}M parameters, {} tokens in windows of 512, median of {runs} runs\n", tokens.len());
    println!("| format | bits/weight | MB | quantize Mparams/s | eval tokens/s | vs first row | pp512 tokens/s | tg128 tokens/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut first_speed = None;
    for format in QuantFormat::parse_list(formats)? {
        let (mut qspeed, mut espeed, mut last) = (Vec::new(), Vec::new(), None);
        for _ in 0..runs {
            let q = quantize_model(&m, format, &QuantOptions::default(), &Monitor::silent(&cancel))?;
            qspeed.push(params / q.seconds.max(1e-9));
            last = Some(q);
        }
        let q = last.expect("at least one run");
        let network = q.network(&m)?;
        for _ in 0..runs {
            espeed.push(
                evaluate_tokens(&network, &tokens, &opts, &candle_core::Device::Cpu, &Monitor::silent(&cancel))?
                    .tokens_per_second,
            );
        }
        let e = median(espeed);
        let base = *first_speed.get_or_insert(e);
        let l = measure_latency(&network, &tokens, m.config.context_length(), &latency, &Monitor::silent(&cancel))?;
        println!(
            "| {format} | {:.3} | {:.1} | {:.0} | {e:.0} | {:.2}× | {:.1} | {:.1} |",
            q.size.bits_per_weight,
            q.size.bytes as f64 / 1e6,
            median(qspeed),
            e / base,
            l.prefill_tokens_per_second,
            l.decode_tokens_per_second
        );
    }
    Ok(())
}
