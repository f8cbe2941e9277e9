//! IQ4_NL (llama.cpp's non-linear 4-bit blocks, GGML type 20): a block on the grid is stored
//! exactly, in llama.cpp's byte layout; the codec round-trips; on the fixture's layers it has a
//! lower (importance-)weighted error than Q4_0 at the same 4.5 bits/weight; it is the fallback of
//! q2_k/q3_k on rows 256 cannot divide, as in llama.cpp; a GGUF with IQ4_NL tensors says type 20
//! in its header and reads back through our loader with every tensor equal; kept in its blocks it
//! runs as the Q8_0 it converts to exactly; bad shapes refused.

use super::common;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use distill_tui::engine::context::Monitor;
use distill_tui::engine::gguf::{load_gguf, scan};
use distill_tui::engine::quant::gguf_export::gguf_tensor_name;
use distill_tui::engine::quant::iq4nl::{self, Iq4NlTensor, KVALUES};
use distill_tui::engine::quant::{export, quantize_model, QuantFormat, QuantOptions};
use half::f16;
use std::sync::atomic::AtomicBool;

static NO_CANCEL: AtomicBool = AtomicBool::new(false);

/// x_j = 0.01·K[j mod 16]: the block's largest magnitude is −1.27 = 0.01·K[0]; the first scale
/// tried from it is negative (llama.cpp's `d = −max/K[0]`), the search over `(itry + K[0])/max`
/// finds 1/0.01 at itry = 0 and the least-squares refit gives d = 0.01 exactly. Stored: f16(0.01),
/// then byte j = index j | index (j + 16) << 4 = j | j << 4.
#[test]
fn a_block_on_the_grid_is_stored_exactly_in_llama_cpp_layout() {
    let x: Vec<f32> = (0..32).map(|j| 0.01 * KVALUES[j % 16] as f32).collect();
    let mut out = [0u8; iq4nl::BLOCK_BYTES];
    iq4nl::quantize_block(&x, None, &mut out);
    assert_eq!(&out[..2], &f16::from_f32(0.01).to_le_bytes());
    for j in 0..16 {
        assert_eq!(out[2 + j], (j as u8) | ((j as u8) << 4), "byte {j}");
    }
    let mut back = [0f32; 32];
    iq4nl::dequantize_block(&out, &mut back);
    let d = f16::from_f32(0.01).to_f32();
    for j in 0..32 {
        assert_eq!(back[j], d * KVALUES[j % 16] as f32);
    }
    // All zeros: a zero scale and index 0 everywhere, as llama.cpp leaves it.
    iq4nl::quantize_block(&[0.0; 32], None, &mut out);
    assert_eq!(out, [0u8; 18]);
}

#[test]
fn the_codec_round_trips_and_refuses_bad_shapes() {
    let values = common::spread_values(4 * 96, 11, 0.05);
    let t = Iq4NlTensor::quantize(&values, 4, 96, None).unwrap();
    assert_eq!(t.data.len(), 4 * 3 * 18);
    assert_eq!(t.storage_bytes(), 216);
    let back = t.dequantize();
    // Every value within half the largest gap of its block's grid (K[15] − K[14] = 24 steps of d).
    for (b, (x, y)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
        let d = f16::from_le_bytes([t.data[b * 18], t.data[b * 18 + 1]]).to_f32().abs();
        for (a, c) in x.iter().zip(y) {
            assert!((a - c).abs() <= 12.5 * d + 1e-6, "block {b}: {a} vs {c} (d {d})");
        }
    }
    let again = Iq4NlTensor::from_bytes(t.data.clone(), 4, 96).unwrap();
    assert_eq!(again, t);
    assert!(Iq4NlTensor::from_bytes(t.data[1..].to_vec(), 4, 96).unwrap_err().to_string().contains("takes 216"));
    assert!(Iq4NlTensor::quantize(&values[..4 * 80], 4, 80, None).unwrap_err().to_string().contains("multiple of 32"));
}

/// On every 64-wide linear layer of the fixture: IQ4_NL's error, weighted by the calibration's
/// importance (what the output error depends on), is below Q4_0's at the same bytes.
#[test]
fn iq4_nl_beats_q4_0_at_the_same_size_and_is_the_k_quant_fallback() {
    let model = common::load_fixture("tiny-llama", false);
    let imatrix = common::calibrated_on_emma(&model, 64, 1024, false);
    let mut layers = 0;
    for (name, imp) in &imatrix.columns {
        let Some((rows, cols, values)) = common::matrix_in_blocks_of(&model, name, 32) else { continue };
        let w = &model.params[name];
        let err = |q: &[f32]| -> f64 {
            values.iter().zip(q).enumerate().map(|(i, (a, b))| imp[i % cols] as f64 * ((a - b) as f64).powi(2)).sum()
        };
        let nl = Iq4NlTensor::quantize(&values, rows, cols, Some(imp)).unwrap().dequantize();
        let q40: Vec<f32> = QTensor::quantize(w, GgmlDType::Q4_0)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (e_nl, e_q40) = (err(&nl), err(&q40));
        assert!(e_nl < e_q40, "{name}: iq4_nl {e_nl:.4e} vs q4_0 {e_q40:.4e}");
        layers += 1;
    }
    assert_eq!(layers, 4 * 6);
    // The K-quants' fallback on rows that 256 does not divide, as in llama.cpp.
    for k in ["q2_k", "q3_k"] {
        assert_eq!(QuantFormat::parse(k).unwrap().for_width(576), QuantFormat::Iq4Nl);
    }
    assert_eq!(QuantFormat::Iq4Nl.for_width(172), QuantFormat::F16);
    assert_eq!(QuantFormat::Iq4Nl.bits_per_weight(64), 4.5);
    assert_eq!(QuantFormat::parse("IQ4_NL").unwrap().name(), "iq4_nl");
    assert_eq!(QuantFormat::parse("iq4_nl+awq").unwrap().name(), "iq4_nl+awq");
    assert_eq!(QuantFormat::parse("IQ4NL+gptq").unwrap(), QuantFormat::Iq4NlGptq);
}

/// q3_k on tiny-llama: the 64-wide layers fall back to IQ4_NL, `down_proj` (172 wide) to F16. The
/// GGUF header says type 20 for exactly the IQ4_NL tensors, the blocks are byte for byte ours, and
/// our loader reads every tensor back equal to the quantized model's values.
#[test]
fn iq4_nl_tensors_are_written_as_type_20_and_read_back_equal() {
    let model = common::load_fixture("tiny-llama", false);
    let q = quantize_model(
        &model,
        QuantFormat::parse("q3_k").unwrap(),
        &QuantOptions::default(),
        &Monitor::silent(&NO_CANCEL),
    )
    .unwrap();
    let nl: Vec<&str> = q.report.iter().filter(|r| r.format == "iq4_nl").map(|r| r.name.as_str()).collect();
    assert_eq!(nl.len(), 4 * 6, "{:#?}", q.report);
    let note = q.report.iter().find(|r| r.name == "model.layers.0.self_attn.o_proj.weight").unwrap().note.clone();
    assert!(note.unwrap().contains("stored as iq4_nl"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    export(&model, &q, &path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let entries = scan::scan(std::io::BufReader::new(std::fs::File::open(&path).unwrap()), len).unwrap();
    for e in &entries {
        let hf = distill_tui::engine::gguf::hf_tensor_name(&e.name).unwrap();
        let want = if nl.contains(&hf.as_str()) { iq4nl::GGML_TYPE_ID } else { e.ggml_type };
        assert_eq!(e.ggml_type, want, "{}", e.name);
        assert_ne!(e.ggml_type, iq4nl::GGML_Q4_0_ID, "{}: no Q4_0 in a q3_k file", e.name);
    }
    assert_eq!(entries.iter().filter(|e| e.ggml_type == iq4nl::GGML_TYPE_ID).count(), nl.len());
    let g = load_gguf(&path, &Device::Cpu).unwrap();
    for (name, t) in &q.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }
    // The bytes of a non-permuted tensor are exactly ours (v_proj: llama.cpp permutes only q and k).
    let v = "model.layers.2.self_attn.v_proj.weight";
    let ours = match &q.tensors[v].data {
        distill_tui::engine::quant::QuantData::Iq4Nl(t) => t.data.clone(),
        other => panic!("{other:?}"),
    };
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(ours.len()).position(|w| w == ours.as_slice());
    assert!(at.is_some(), "{} ({}) not found verbatim", v, gguf_tensor_name(v).unwrap());
}

/// llama.cpp's own IQ4_NL file of tiny-qwen2 (`tests/fixtures/iq4nl`, made by `llama-quantize
/// --pure … IQ4_NL`): our quantizer writes every one of its 23 matrices byte for byte, and our
/// reader loads llama.cpp's file with every tensor equal to our dequantization.
#[test]
fn our_iq4_nl_bytes_are_llama_cpps_and_we_read_its_file() {
    use distill_tui::engine::quant::{QuantData, QuantPolicy, TensorRule};
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iq4nl/tiny-qwen2-iq4_nl-llamacpp.gguf");
    let model = common::load_fixture("tiny-qwen2", false);
    let policy = QuantPolicy { embeddings: TensorRule::Same, head: TensorRule::Same };
    let q = quantize_model(
        &model,
        QuantFormat::Iq4Nl,
        &QuantOptions { policy, ..Default::default() },
        &Monitor::silent(&NO_CANCEL),
    )
    .unwrap();
    let (content, mut reader, iq4) = distill_tui::engine::gguf::open_gguf(&golden).unwrap();
    assert_eq!(iq4.len(), 23, "{iq4:?}");
    let mut compared = 0;
    for (name, t) in &q.tensors {
        let QuantData::Iq4Nl(ours) = &t.data else { continue };
        let gguf = gguf_tensor_name(name).unwrap();
        assert!(iq4.contains(&gguf), "{gguf} is IQ4_NL in llama.cpp's file");
        let theirs = content.tensor_infos[&gguf].read(&mut reader, content.tensor_data_offset, &Device::Cpu).unwrap();
        let theirs = theirs.data().unwrap();
        let blocks = ours.data.chunks(18).zip(theirs.chunks(18)).filter(|(a, b)| a != b).count();
        assert_eq!(blocks, 0, "{name}: {blocks} of {} blocks differ from llama.cpp's", ours.data.len() / 18);
        assert_eq!(ours.data.as_slice(), &*theirs);
        compared += 1;
    }
    assert_eq!(compared, 23);
    let g = load_gguf(&golden, &Device::Cpu).unwrap();
    for (name, t) in &q.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }
}

/// llama.cpp's IQ4_NL file kept in its blocks runs its IQ4_NL matrices as the Q8_0 blocks they
/// convert to exactly (candle has no IQ4_NL type): 8.5 bits/weight resident instead of f32, the
/// same logits as the model dequantized to f32. The pair check reads headers only: the header
/// names the tensors' type as the loader does (`iq4_nl`, not the Q4_0 candle parses the blocks
/// as) and counts the memory the loader holds.
#[test]
fn an_iq4_nl_gguf_runs_as_q8_0_and_its_header_counts_what_the_loader_holds() {
    use distill_tui::engine::header::read_header;
    use distill_tui::engine::loader::{load_model, LoadOptions};
    use distill_tui::engine::source::resolve;
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iq4nl/tiny-qwen2-iq4_nl-llamacpp.gguf");
    let raw = distill_tui::engine::gguf::read_gguf_header(&golden).unwrap();
    assert_eq!(raw.iq4nl.len(), 23, "{:?}", raw.iq4nl);
    assert!(raw.iq4nl.iter().all(|n| raw.tensors.iter().any(|(t, _, _)| t == n)), "HF names");
    let resolved = resolve(golden.to_str().unwrap(), &common::hub(), &|_| {}).unwrap();
    let header = read_header(&resolved).unwrap();
    let kept = load_model(&resolved, &LoadOptions { keep_quantized: true, ..LoadOptions::default() }).unwrap();
    assert!(header.info.dtype.contains("IQ4_NL ×23"), "{}", header.info.dtype);
    assert_eq!(header.info.dtype, kept.info.dtype);
    assert_eq!(header.block_bytes, Some(kept.resident_weight_bytes()));

    let dense = load_model(&resolved, &LoadOptions::default()).unwrap();
    for name in &raw.iq4nl {
        assert_eq!(kept.quantized[name].dtype(), GgmlDType::Q8_0, "{name}");
        // Exactly the values: the Q8_0 blocks dequantize to the IQ4_NL values bit for bit.
        let q8 = kept.quantized[name].dequantize(&Device::Cpu).unwrap();
        assert_eq!(common::max_abs_diff(&q8, &dense.params[name]), 0.0, "{name}");
    }
    assert!(kept.notes.iter().any(|n| n.contains("(iq4_nl) runs as q8_0")), "{:?}", kept.notes);
    assert!(kept.resident_weight_bytes() < dense.resident_weight_bytes() / 2);
    let (ids, _) = common::golden(&common::fixture("tiny-qwen2"));
    let d = common::max_abs_diff(&kept.network.forward(&ids).unwrap(), &dense.network.forward(&ids).unwrap());
    assert!(d < 1e-4, "kept and dequantized logits differ by {d}");
}
