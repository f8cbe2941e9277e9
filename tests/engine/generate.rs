//! Generation with a KV cache: on every causal fixture family the cached greedy tokens equal those
//! of a full forward pass re-run at every step, and the cached logits equal the full pass's; a
//! seeded sampler repeats itself; classifiers and bad sampling settings are refused.

use crate::common;
use candle_core::{Device, Tensor};
use distill_tui::engine::context::Monitor;
use distill_tui::engine::generate::{generate, Sampling};
use distill_tui::engine::kernels;
use distill_tui::engine::models::{KvCache, Network};
use distill_tui::engine::quant::{quantize::quantize_model, QuantFormat, QuantOptions};
use std::sync::atomic::AtomicBool;

const PROMPT: &str = "It is a truth universally acknowledged, that a single man in possession";

/// The greedy continuation by a full forward pass over the whole sequence at every step.
fn uncached_greedy(m: &distill_tui::engine::loader::LoadedModel, ids: &[u32], n: usize) -> Vec<u32> {
    let mut seq = ids.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let input = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
        let logits = m.network.forward(&input).unwrap();
        let last: Vec<f32> = logits.squeeze(0).unwrap().get(seq.len() - 1).unwrap().to_vec1().unwrap();
        let next = last.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        out.push(next);
        seq.push(next);
    }
    out
}

/// The last position's logits after a prefill of `ids` and `steps` cached tokens of `then`,
/// against a full forward pass over the same sequence: their largest difference.
fn cached_vs_full(network: &Network, ids: &[u32], then: &[u32]) -> f32 {
    let mut cache = KvCache::new();
    let mut seq = ids.to_vec();
    let mut cached =
        network.forward_cached(&Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap(), &mut cache).unwrap();
    for &t in then {
        seq.push(t);
        cached = network.forward_cached(&Tensor::from_slice(&[t], (1, 1), &Device::Cpu).unwrap(), &mut cache).unwrap();
    }
    assert_eq!(cache.len, seq.len());
    let full = network.forward(&Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap()).unwrap();
    let full_last = full.squeeze(0).unwrap().get(seq.len() - 1).unwrap();
    common::max_abs_diff(&cached.squeeze(0).unwrap(), &full_last)
}

#[test]
fn cached_greedy_generation_equals_a_full_pass_at_every_step_on_every_family() {
    let cancel = AtomicBool::new(false);
    // The fused kernels keep the cache in host buffers; the reference path concatenates tensors.
    for reference in [false, true] {
        let _scope = reference.then(kernels::reference);
        for family in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-llama-student"] {
            let m = common::load_fixture(family, false);
            let g = generate(&m, PROMPT, 16, &Sampling::greedy(), &Monitor::silent(&cancel)).unwrap();
            let ids = distill_tui::engine::tokenizer::encode_plain(m.tokenizer().unwrap(), PROMPT).unwrap();
            assert_eq!(g.prompt_tokens, ids.len());
            assert_eq!(g.tokens, uncached_greedy(&m, &ids, 16), "{family}: the cache changed the tokens");
            assert_eq!(g.tokens.len(), 16);
            // And the logits themselves, after eight cached steps.
            let diff = cached_vs_full(&m.network, &ids, &g.tokens[..8]);
            assert!(diff < 1e-4, "{family} (reference {reference}): cached logits differ by {diff}");
        }
    }
}

#[test]
fn a_quantized_network_decodes_from_the_cache_like_its_full_pass() {
    // The full pass multiplies its many rows with dequantized weights in f32, a cached step its one
    // row with candle's 8-bit activations: equal up to that rounding.
    let cancel = AtomicBool::new(false);
    for family in ["tiny-llama", "tiny-gpt2"] {
        let m = common::load_fixture(family, false);
        for format in ["q8_0", "q4_0"] {
            let q = quantize_model(
                &m,
                QuantFormat::parse(format).unwrap(),
                &QuantOptions::default(),
                &Monitor::silent(&cancel),
            )
            .unwrap();
            let network = q.network(&m).unwrap();
            let ids = distill_tui::engine::tokenizer::encode_plain(m.tokenizer().unwrap(), PROMPT).unwrap();
            let diff = cached_vs_full(&network, &ids, &[5, 17, 3, 9]);
            assert!(diff < 2e-2, "{family} {format}: cached logits differ by {diff}");
        }
    }
}

#[test]
fn seeded_sampling_repeats_and_bad_settings_are_refused() {
    let cancel = AtomicBool::new(false);
    let quiet = Monitor::silent(&cancel);
    let m = common::load_fixture("tiny-llama", false);
    let s = Sampling { temperature: 1.5, top_k: 50, top_p: 0.95, seed: 7 };
    let a = generate(&m, PROMPT, 12, &s, &quiet).unwrap();
    let b = generate(&m, PROMPT, 12, &s, &quiet).unwrap();
    assert_eq!(a.tokens, b.tokens, "one seed, one continuation");
    let c = generate(&m, PROMPT, 12, &Sampling { seed: 8, ..s.clone() }, &quiet).unwrap();
    assert_ne!(a.tokens, c.tokens, "another seed, another continuation (on a near-uniform fixture)");
    let top1 = Sampling { top_k: 1, ..s.clone() };
    let greedy = generate(&m, PROMPT, 12, &Sampling::greedy(), &quiet).unwrap();
    assert_eq!(generate(&m, PROMPT, 12, &top1, &quiet).unwrap().tokens, greedy.tokens, "top-k 1 is greedy");
    let e = generate(&m, PROMPT, 4, &Sampling { top_p: 0.0, ..s.clone() }, &quiet).unwrap_err();
    assert!(e.to_string().contains("--top-p 0"), "{e}");
    let bert = common::load_fixture("tiny-bert-cls", false);
    let e = generate(&bert, "a sentence", 4, &Sampling::greedy(), &quiet).unwrap_err();
    assert!(e.to_string().contains("classifier"), "{e}");
}

/// Batched continuation (on-policy distillation, sample scoring): a row's sampled tokens do not
/// depend on the rows beside it; to the judge, its own greedy continuations read more likely than
/// its samples at T = 1, and those more than samples at T = 3; sample scores repeat themselves.
#[test]
fn batched_continuations_match_single_rows_and_sample_scores_rank_writers() {
    use distill_tui::engine::generate::{continue_batch, score_samples};
    use rand::SeedableRng;
    let teacher = common::load_fixture("tiny-llama", false);
    let text: Vec<u32> = (0..400u32).map(|i| (i * 7919 + 13) % teacher.config.vocab_size() as u32).collect();
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| text[i * 50..i * 50 + 12].to_vec()).collect();
    let sampling = Sampling { temperature: 1.0, top_k: 0, top_p: 0.9, seed: 0 };
    let rng = |i: u64| rand_chacha::ChaCha8Rng::seed_from_u64(100 + i);
    let mut rngs: Vec<_> = (0..4).map(rng).collect();
    let batched = continue_batch(&teacher.network, &prompts, 10, &sampling, &mut rngs, &Device::Cpu).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = continue_batch(
            &teacher.network,
            std::slice::from_ref(p),
            10,
            &sampling,
            &mut [rng(i as u64)],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(alone[0], batched[i], "row {i}: batched and alone differ");
    }
    let score = |writer: &Network, temp: f64| {
        score_samples(writer, &teacher.network, &text, (6, 16, 16), temp, 3, &Device::Cpu).unwrap()
    };
    let (greedy, t1, t3) = (score(&teacher.network, 0.0), score(&teacher.network, 1.0), score(&teacher.network, 3.0));
    assert_eq!(greedy.new_tokens * greedy.prompts, 96);
    assert!(
        greedy.judge_perplexity < t1.judge_perplexity && t1.judge_perplexity < t3.judge_perplexity,
        "{greedy:?} {t1:?} {t3:?}"
    );
    assert_eq!(score(&teacher.network, 1.0), t1, "seeded: the same samples");
    let err = score_samples(&teacher.network, &teacher.network, &text[..20], (2, 16, 16), 1.0, 0, &Device::Cpu);
    assert!(err.unwrap_err().to_string().contains("at least 32 tokens"));
}
