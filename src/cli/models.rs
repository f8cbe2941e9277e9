//! Model commands: `inspect`, `eval`, `derive-student`, `check`, `search`, `cache`.

use super::{print_json, Command};
use crate::engine::context::Progress;
use crate::engine::context::{Monitor, Settings};
use crate::engine::derive::{derive_and_save, StudentShape};
use crate::engine::distribution::soften;
use crate::engine::error::printable;
use crate::engine::eval::{evaluate_text, measure_against, EvalOptions};
use crate::engine::header::{derived_header, read_header, ModelHeader};
use crate::engine::hub::{self, DownloadProgress, HubSettings};
use crate::engine::loader::{load_model, LoadOptions, LoadedModel};
use crate::engine::pair::{check_pair, gib};
use crate::engine::prompt::prompt_logits;
use crate::engine::recipe::teacher_precision::TeacherPrecision;
use crate::engine::source::resolve;
use crate::engine::{Error, Result};
use crate::headless::interrupt_flag;
use crate::headless::progress::{Output, Reporter};

pub(super) fn dispatch(command: Command, settings: &Settings, output: Output) -> Result<()> {
    let settings = &settings.hub;
    let reporter = Reporter::new(output);
    let cancel = interrupt_flag();
    let load = |spec: &str| load(settings, spec, false, &reporter);
    match command {
        Command::Inspect { model, json } => {
            let m = load(&model)?;
            if json {
                print_json(&m.info)
            } else {
                print_info(&m);
                Ok(())
            }
        }
        Command::Eval { model, data, seq_len, max_tokens, batch_size, protocol, teacher: Some(teacher), json } => {
            let text = std::fs::read_to_string(&data)
                .map_err(|e| Error::Invalid(format!("cannot read --data {}: {e}", data.display())))?;
            let (t, m) = (load(&teacher)?, load(&model)?);
            let (protocol, max_tokens) = protocol.apply(seq_len, max_tokens)?;
            let opts = EvalOptions { seq_len, max_tokens, batch_size, protocol };
            let (own, c) = measure_against(&t, &[&m], &text, &opts, &Monitor::new(&cancel, &reporter))?;
            reporter.finish();
            let c = &c[0];
            if json {
                let report = serde_json::json!({
                    "model": m.info.name, "perplexity": c.candidate.perplexity, "top1_accuracy": c.candidate.top1_accuracy,
                    "kl_to_teacher": c.kl, "agreement": c.agreement, "predicted_tokens": c.candidate.predicted_tokens,
                    "teacher": { "model": t.info.name, "perplexity": own.perplexity, "top1_accuracy": own.top1_accuracy },
                });
                return print_json(&report);
            }
            println!("model           {} ({} parameters)", m.info.name, m.info.parameters);
            println!("teacher         {} ({} parameters)", t.info.name, t.info.parameters);
            println!("perplexity      {:.4} (teacher {:.4})", c.candidate.perplexity, own.perplexity);
            println!("top-1 accuracy  {:.4} (teacher {:.4})", c.candidate.top1_accuracy, own.top1_accuracy);
            println!("KL(teacher‖·)   {:.4} nats per token", c.kl);
            println!("agreement       {:.4}", c.agreement);
            println!("predicted       {} tokens in windows of {seq_len}", c.candidate.predicted_tokens);
            Ok(())
        }
        Command::Eval { model, data, seq_len, max_tokens, batch_size, protocol, teacher: None, json } => {
            let text = std::fs::read_to_string(&data)
                .map_err(|e| Error::Invalid(format!("cannot read --data {}: {e}", data.display())))?;
            let m = load(&model)?;
            let (protocol, max_tokens) = protocol.apply(seq_len, max_tokens)?;
            let opts = EvalOptions { seq_len, max_tokens, batch_size, protocol };
            let report = evaluate_text(&m, &text, &opts, &Monitor::new(&cancel, &reporter).stage("eval"))?;
            reporter.finish();
            if json {
                print_json(&report)
            } else {
                println!("model           {}", m.info.name);
                println!("data            {}", data.display());
                println!("perplexity      {:.4}", report.perplexity);
                println!("top-1 accuracy  {:.4}", report.top1_accuracy);
                println!(
                    "predicted       {} tokens in {} windows of {}",
                    report.predicted_tokens, report.windows, seq_len
                );
                println!("speed           {:.0} tokens/s ({:.1} s)", report.tokens_per_second, report.seconds);
                Ok(())
            }
        }
        Command::DeriveStudent {
            teacher,
            layers,
            prune: true,
            target_params,
            calib,
            calib_tokens,
            seq_len,
            hidden,
            heads,
            kv_heads,
            intermediate,
            out,
            json,
            ..
        } => {
            if hidden.is_some() || heads.is_some() {
                return Err(Error::Invalid(
                    "--prune keeps the hidden size and sets the heads through --kv-heads (whole key/value groups)"
                        .into(),
                ));
            }
            let calib = calib.expect("clap requires --calib with --prune");
            let text = std::fs::read_to_string(&calib)
                .map_err(|e| Error::Invalid(format!("cannot read --calib {}: {e}", calib.display())))?;
            let t = load(&teacher)?;
            let opts = crate::engine::prune::PruneOptions {
                target_params,
                layers,
                kv_heads,
                intermediate,
                seq_len,
                calib_tokens,
            };
            let report =
                crate::engine::prune::prune_and_save(&t, &text, &opts, &out, &Monitor::new(&cancel, &reporter))?;
            reporter.finish();
            if json {
                print_json(&report)
            } else {
                super::derive::print_pruned(&report);
                Ok(())
            }
        }
        Command::DeriveStudent { teacher, layers, hidden, heads, kv_heads, intermediate, seed, out, json, .. } => {
            let t = load(&teacher)?;
            let layers = layers.ok_or_else(|| Error::Invalid("--layers N: how many layers the student has".into()))?;
            let shape = StudentShape { layers, hidden, heads, kv_heads, intermediate };
            let report = derive_and_save(&t, &shape, seed, &out)?;
            if json {
                print_json(&report)
            } else {
                super::derive::print_derived(&report, seed);
                Ok(())
            }
        }
        Command::Check { teacher, student, derive_layers, batch_size, seq_len, teacher_precision, json } => {
            // Configs, tensor headers and tokenizers only: no weights are loaded.
            let header = |spec: &str| -> Result<ModelHeader> {
                let progress = |p: &DownloadProgress| {
                    reporter.progress(&format!("downloading {}", p.file), p.bytes, p.total, "bytes")
                };
                read_header(&resolve(spec, settings, &progress)?)
            };
            let mut t = header(&teacher)?;
            if let Some(p) = teacher_precision {
                let p = TeacherPrecision::parse(&p).map_err(Error::Invalid)?;
                t.keep_quantized = p == TeacherPrecision::Gguf;
            }
            let s = match (student, derive_layers) {
                (Some(spec), _) => header(&spec)?,
                (None, Some(layers)) => derived_header(&t, &StudentShape { layers, ..StudentShape::default() })?,
                (None, None) => return Err(Error::Invalid("give a STUDENT or --derive-layers N".into())),
            };
            let r = check_pair(&t, &s, batch_size, seq_len)?;
            // The verdict is the exit code too: a pair that does not fit is not ready to run.
            let verdict = if r.fits {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "the pair does not fit at batch {batch_size} × seq_len {seq_len}: {}",
                    r.notes.last().map(String::as_str).unwrap_or("")
                )))
            };
            if json {
                print_json(&r)?;
                return verdict;
            }
            println!(
                "teacher   {} ({} parameters, {:.2} GiB of weights{})",
                r.teacher,
                t.info.parameters,
                gib(t.resident_bytes(t.keep_quantized)),
                if t.keep_quantized && t.block_bytes.is_some() { " in its GGUF block formats" } else { " in f32" }
            );
            println!("student   {} ({} parameters)", r.student, s.info.parameters);
            println!("vocab     {}", serde_json::to_string(&r.vocab).unwrap_or_default());
            let m = &r.memory;
            println!(
                "memory    {:.2} GiB for batch {}×{}: teacher {:.2}, student {:.2} + grads {:.2} + AdamW {:.2} (+{:.2} while updating), logits {:.2}, activations {:.2}, process {:.2}",
                gib(m.total),
                r.batch_size,
                r.seq_len,
                gib(m.teacher_weights),
                gib(m.student_weights),
                gib(m.student_grads),
                gib(m.optimizer),
                gib(m.transient),
                gib(m.logits),
                gib(m.activations),
                gib(m.runtime)
            );
            println!(
                "machine   {:.1} GiB total, {:.1} GiB available: {}",
                gib(r.machine_total_bytes),
                gib(r.machine_available_bytes),
                if r.fits { "fits" } else { "does NOT fit" }
            );
            println!("cpu       {}", r.cpu_kernels);
            for n in &r.notes {
                println!("note      {n}");
            }
            verdict
        }
        Command::Logits { model, prompt, temperatures, top, json } => {
            let m = load(&model)?;
            let out = prompt_logits(&m, &prompt)?;
            let row = out.rows.last().ok_or_else(|| Error::Invalid("the model gave no output".into()))?;
            let what = if out.labels.is_empty() { "next token after the prompt" } else { "class" };
            let at: Vec<serde_json::Value> = temperatures
                .iter()
                .map(|&t| {
                    let s = soften(row, t, top);
                    let entries: Vec<serde_json::Value> = s
                        .top
                        .iter()
                        .map(|&(i, p)| serde_json::json!({ "id": i, "name": out.output_name(&m, i), "p": p }))
                        .collect();
                    serde_json::json!({ "temperature": t, "entropy": s.entropy, "top_mass": s.top_mass, "top": entries })
                })
                .collect();
            if json {
                let tokens = &out.tokens;
                return print_json(&serde_json::json!({ "model": m.info.name, "tokens": tokens, "distributions": at }));
            }
            println!("model   {}", m.info.name);
            println!("prompt  {} tokens; {what}:", out.tokens.len());
            for d in &at {
                println!(
                    "T = {}  (entropy {:.3} nats, top-{top} mass {:.3})",
                    d["temperature"],
                    d["entropy"].as_f64().unwrap_or(0.0),
                    d["top_mass"].as_f64().unwrap_or(0.0)
                );
                for e in d["top"].as_array().into_iter().flatten() {
                    println!("  {:>8.4}  {:?}", e["p"].as_f64().unwrap_or(0.0), e["name"].as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        Command::Temperature { model, prompt, t1, t2, student, top, json } => {
            temperature(&load, &model, &prompt, [t1, t2], student.as_deref(), top, json)
        }
        Command::Generate { model, prompt, max_new_tokens, temperature, top_k, top_p, seed, json } => {
            let sampling = crate::engine::generate::Sampling { temperature, top_k, top_p, seed };
            sampling.validate()?;
            let m = load(&model)?;
            let monitor = crate::engine::context::Monitor::new(&cancel, &reporter).stage("generating").unit("tokens");
            let g = crate::engine::generate::generate(&m, &prompt, max_new_tokens, &sampling, &monitor)?;
            reporter.finish();
            let threads = rayon::current_num_threads();
            let (pp, tg) = (g.prefill_tokens_per_second(), g.decode_tokens_per_second());
            if json {
                return print_json(&serde_json::json!({
                    "model": m.info.name,
                    "generation": g,
                    "prefill_tokens_per_second": pp,
                    "decode_tokens_per_second": tg,
                    "ms_per_token": 1000.0 / tg.max(1e-9),
                    "threads": threads,
                }));
            }
            println!("{prompt}{}", crate::engine::error::printable(&g.text, 100_000, true));
            println!(
                "\nprefill {} tokens at {pp:.1} tokens/s · decode {} tokens at {tg:.1} tokens/s ({:.2} ms/token) · {threads} threads · stopped at {}",
                g.prompt_tokens,
                g.tokens.len(),
                1000.0 / tg.max(1e-9),
                g.stopped.replace('_', " ")
            );
            Ok(())
        }
        Command::Search { query, limit, json } => {
            let found = hub::search(settings, &query, limit)?;
            if json {
                return print_json(&found);
            }
            for m in &found {
                println!("{:<60} {:>10} downloads  {}", m.id, m.downloads, m.pipeline_tag.as_deref().unwrap_or(""));
            }
            Ok(())
        }
        Command::Run { .. } | Command::Pretrain(_) | Command::Export(_) | Command::Finetune(_) => {
            unreachable!("dispatched in cli::run")
        }
        Command::Cache { json } => {
            let models = hub::list_cache(settings)?;
            if json {
                return print_json(&models);
            }
            println!("{} ({} models)", settings.cache_dir.display(), models.len());
            for m in &models {
                let kind = if m.has_safetensors { "safetensors".to_string() } else { m.gguf_files.join(", ") };
                println!("{:<55} {:>9.1} MB  {}", m.id, m.bytes as f64 / 1e6, kind);
            }
            Ok(())
        }
        Command::Quantize(_)
        | Command::Sweep(_)
        | Command::Completions { .. }
        | Command::Manpage
        | Command::Runs { .. }
        | Command::Show { .. }
        | Command::Compare(_)
        | Command::Advise(_) => {
            unreachable!("dispatched by cli::run")
        }
    }
}

/// Resolves and loads a model, showing download progress on `reporter`.
pub(crate) fn load(settings: &HubSettings, spec: &str, trainable: bool, reporter: &Reporter) -> Result<LoadedModel> {
    let progress =
        |p: &DownloadProgress| reporter.progress(&format!("downloading {}", p.file), p.bytes, p.total, "bytes");
    let resolved = resolve(spec, settings, &progress)?;
    load_model(&resolved, &LoadOptions { trainable, ..LoadOptions::default() })
}

fn print_info(m: &LoadedModel) {
    let i = &m.info;
    // Every string here may come from the file: shown, never sent to the terminal as escapes.
    let p = |s: &str| printable(s, 200, false);
    println!("model         {}", p(&i.name));
    println!("architecture  {} ({}, {})", p(&i.architecture), p(&i.model_type), i.task);
    println!("parameters    {} ({:.1}M)", i.parameters, i.parameters as f64 / 1e6);
    let d = &i.dims;
    println!("layers        {}", d.layers);
    println!("hidden        {} (intermediate {})", d.hidden, d.intermediate);
    println!("heads         {} (kv {}, head dim {})", d.heads, d.kv_heads, d.head_dim);
    println!("vocab         {}", d.vocab);
    println!("context       {}", d.context_length);
    println!("tied embed.   {}", d.tied_embeddings);
    println!("dtype         {}", p(&i.dtype));
    println!("bytes         {} ({:.1} MB, {})", i.bytes, i.bytes as f64 / 1e6, i.format);
    println!("source        {}", p(&i.source_path));
    if let Some(rev) = &i.hub.revision {
        println!("revision      {}", p(rev));
    }
    println!("tokenizer     {}", p(i.tokenizer.as_deref().unwrap_or("none")));
    if !i.labels.is_empty() {
        println!("labels        {}", p(&i.labels.join(", ")));
    }
}

/// `distill-tui temperature`: the Temperature screen's numbers.
fn temperature(
    load: &dyn Fn(&str) -> Result<LoadedModel>,
    model: &str,
    prompt: &str,
    t: [f64; 2],
    student: Option<&str>,
    top: usize,
    json: bool,
) -> Result<()> {
    for (name, v) in [("--t1", t[0]), ("--t2", t[1])] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(Error::Invalid(format!("{name} {v}: a temperature must be > 0")));
        }
    }
    let m = load(model)?;
    let out = prompt_logits(&m, prompt)?;
    let row = out.rows.last().ok_or_else(|| Error::Invalid("the model gave no output".into()))?;
    let s = student.map(load).transpose()?;
    let s_out = s.as_ref().map(|s| prompt_logits(s, prompt)).transpose()?;
    let s_row = s_out.as_ref().and_then(|o| o.rows.last());
    if let (Some(sr), Some(sm)) = (s_row, &s) {
        if sr.len() != row.len() {
            return Err(Error::Invalid(format!(
                "{} has {} outputs and {} has {}: a student is read on the teacher's rows, so they need one vocabulary",
                m.info.name,
                row.len(),
                sm.info.name,
                sr.len()
            )));
        }
    }
    let v = crate::engine::distribution::temperature_view(row, s_row.map(Vec::as_slice), t, top.max(1));
    let names: Vec<String> = v.ids.iter().map(|&i| out.output_name(&m, i)).collect();
    if json {
        return print_json(&serde_json::json!({
            "model": m.info.name,
            "student": s.as_ref().map(|s| s.info.name.clone()),
            "tokens": out.tokens,
            "names": names,
            "view": v,
        }));
    }
    let what = if out.labels.is_empty() { "the next token after the prompt" } else { "the classes" };
    println!(
        "model   {}{}",
        m.info.name,
        s.as_ref().map(|s| format!("  (student {})", s.info.name)).unwrap_or_default()
    );
    println!("prompt  {} tokens; {what}, rows in the teacher's T={} order:", out.tokens.len(), t[0]);
    let mut panels = vec![("teacher", &v.teacher)];
    if let Some(p) = &v.student {
        panels.push(("student", p));
    }
    let heads: Vec<String> = panels.iter().flat_map(|(r, _)| t.iter().map(move |t| format!("{r} T={t}"))).collect();
    println!("  {:<16} {}", "", heads.iter().map(|h| format!("{h:>13}")).collect::<String>());
    let cells = |f: &dyn Fn(&crate::engine::distribution::Panel, usize) -> String| -> String {
        panels
            .iter()
            .flat_map(|(_, p)| (0..2).map(move |ti| (p, ti)))
            .map(|(p, ti)| format!("{:>13}", f(p, ti)))
            .collect()
    };
    for (row_i, name) in names.iter().enumerate() {
        let label = format!("{name:?}");
        println!("  {label:<16} {}", cells(&|p, ti| format!("{:.4}", p.probs[ti][row_i])));
    }
    println!("  {:<16} {}", "these rows' mass", cells(&|p, ti| format!("{:.4}", p.mass[ti])));
    println!("  {:<16} {}", "entropy (nats)", cells(&|p, ti| format!("{:.3}", p.entropy[ti])));
    let mut kl = format!("KL(T1‖T2)  teacher {:.4}", v.teacher.kl_t1_t2);
    if let Some(p) = &v.student {
        kl.push_str(&format!("  student {:.4}", p.kl_t1_t2));
    }
    println!("{kl} nats");
    if let Some([a, b]) = v.kl_teacher_student {
        println!("KL(teacher‖student)  at T1 {a:.4}  at T2 {b:.4} nats");
    }
    let n = row.len();
    let ranks: Vec<usize> =
        [1usize, 10, 100, 1_000, 10_000, 100_000].into_iter().filter(|r| *r < n).chain([n]).collect();
    println!("probability at rank {}", ranks.iter().map(|r| format!("{r:>10}")).collect::<String>());
    for (role, logits) in [("teacher", Some(row)), ("student", s_row)] {
        let Some(logits) = logits else { continue };
        for tv in t {
            let mut probs = crate::engine::distribution::softmax_at(logits, tv);
            probs.sort_by(|a, b| b.total_cmp(a));
            let label = format!("{role} T={tv}");
            println!("  {label:<17}{}", ranks.iter().map(|&r| format!("{:>10.2e}", probs[r - 1])).collect::<String>());
        }
    }
    Ok(())
}
