//! The run library on the command line: `runs` lists the runs, `show RUN` prints one, `compare
//! RUN...` prints their points side by side (the Compare screen's table, the Pareto front marked).

use crate::engine::context::Settings;
use crate::engine::library::sweep::SweepRecord;
use crate::engine::library::table::{points_table, rows, runs_table, Format};
use crate::engine::library::{self, RunEntry};
use crate::engine::summary::RunSummary;
use crate::engine::tradeoff::{merge_runs, sort_points, Column, Metric, Point};
use crate::engine::{Error, Result};

/// `compare`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Runs: folders, or names as `distill-tui runs` lists them; a sweep stands for its members.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Sort by a column: run, point, size, ppl, top1, kl, agree, decode, cost, path (best first).
    #[arg(long, default_value = "run")]
    pub sort: String,
    /// Reverse the order.
    #[arg(long)]
    pub reverse: bool,
    /// The quality the Pareto front is judged on: ppl, kl or agree.
    #[arg(long, default_value = "ppl")]
    pub front: String,
    /// One JSON object: the rows with a `pareto` flag.
    #[arg(long, conflicts_with_all = ["csv", "markdown"])]
    pub json: bool,
    #[arg(long, conflicts_with = "markdown")]
    pub csv: bool,
    /// A Markdown table (pastes into a README or an issue).
    #[arg(long)]
    pub markdown: bool,
}

pub fn runs(settings: &Settings, json: bool) -> Result<()> {
    let all = library::list(settings);
    if json {
        return super::print_json(&all);
    }
    if all.is_empty() {
        println!("no runs yet: `distill-tui run RECIPE` (or s on the workbench's Train screen) starts one");
        return Ok(());
    }
    print!("{}", runs_table(&all, Format::Text));
    Ok(())
}

/// The runs `names` stand for, a sweep expanded to its members.
fn expand(settings: &Settings, names: &[String]) -> Result<Vec<RunEntry>> {
    let mut out: Vec<RunEntry> = Vec::new();
    for name in names {
        let entry = library::find(settings, name)?;
        let members = match SweepRecord::read(&entry.dir) {
            Ok(s) => s.dirs(&entry.dir).iter().filter_map(|d| RunEntry::read(d)).collect(),
            Err(_) => vec![entry],
        };
        for m in members {
            if !out.iter().any(|e| e.dir == m.dir) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// The points of `runs` (finished ones) merged, each labelled by what tells its run apart.
pub fn points_of(runs: &[RunEntry]) -> Result<Vec<Point>> {
    let done: Vec<RunEntry> = runs.iter().filter(|e| e.summary.is_some()).cloned().collect();
    if done.is_empty() {
        return Err(Error::Invalid(format!(
            "no finished run among {}: a run has points once it finished (see `distill-tui runs`)",
            runs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let labels = library::differences(&done);
    let per_run: Vec<(String, Vec<Point>)> = done
        .iter()
        .zip(labels)
        .map(|(e, l)| (if done.len() == 1 { String::new() } else { l }, Point::of_run(e.summary.as_ref().unwrap())))
        .collect();
    Ok(merge_runs(&per_run))
}

pub fn compare(settings: &Settings, args: &CompareArgs) -> Result<()> {
    let column = Column::parse(&args.sort).ok_or_else(|| {
        let valid: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        Error::Invalid(format!("--sort {}: valid: {}", args.sort, valid.join(", ")))
    })?;
    let metric = match args.front.as_str() {
        "ppl" | "perplexity" => Metric::Perplexity,
        "kl" => Metric::Kl,
        "agree" | "agreement" => Metric::Agreement,
        other => return Err(Error::Invalid(format!("--front {other}: valid: ppl, kl, agree"))),
    };
    let runs = expand(settings, &args.runs)?;
    let mut points = points_of(&runs)?;
    sort_points(&mut points, column, args.reverse);
    if args.json {
        return super::print_json(&serde_json::json!({ "front": metric.label(), "rows": rows(&points, metric) }));
    }
    let format = if args.csv {
        Format::Csv
    } else if args.markdown {
        Format::Markdown
    } else {
        Format::Text
    };
    print!("{}", points_table(&points, metric, format));
    Ok(())
}

pub fn show(settings: &Settings, name: &str, json: bool) -> Result<()> {
    let entry = library::find(settings, name)?;
    let sweep = SweepRecord::read(&entry.dir).ok();
    let members: Vec<RunEntry> = match &sweep {
        Some(s) => s.dirs(&entry.dir).iter().filter_map(|d| RunEntry::read(d)).collect(),
        None => Vec::new(),
    };
    let points = match &sweep {
        Some(_) => points_of(&members).unwrap_or_default(),
        None => entry.summary.as_ref().map(Point::of_run).unwrap_or_default(),
    };
    if json {
        return super::print_json(&serde_json::json!({
            "run": entry,
            "members": members,
            "points": rows(&points, Metric::Perplexity),
        }));
    }
    print_entry(&entry);
    if let Some(s) = &sweep {
        println!("\nsweep ({:?}) of {} runs:", s.sweep.mode, s.members.len());
        print!("{}", runs_table(&members, Format::Text));
    }
    if let Some(summary) = &entry.summary {
        print_models(summary);
    }
    if !points.is_empty() {
        println!();
        print!("{}", points_table(&points, Metric::Perplexity, Format::Text));
    }
    Ok(())
}

fn print_entry(e: &RunEntry) {
    println!("run      {}", e.name);
    println!("folder   {}", e.dir.display());
    println!("task     {}", e.task());
    let status = match (e.status.resumable(), e.checkpoint_step) {
        (true, Some(step)) => format!("{} (last checkpoint: step {step}; continue with --resume)", e.status.name()),
        _ => e.status.name().to_string(),
    };
    println!("status   {status}");
    if let Some(r) = &e.record {
        println!("recipe   {}", r.recipe);
        if let Some(t) = &r.teacher {
            println!("teacher  {t}");
        }
        if let Some(s) = &r.student {
            println!("student  {s}");
        }
        println!("started  {}   updated {}", library::show_time(r.created), library::show_time(r.updated));
        if let Some(err) = &r.error {
            println!("error    {err}");
        }
    }
    let settings = e.settings();
    if !settings.is_empty() {
        let line: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("settings {}", line.join(" "));
    }
}

fn print_models(s: &RunSummary) {
    println!();
    for role in s.roles() {
        let Some(m) = s.role(role) else { continue };
        let mut line = format!("{:<9} {:>10} parameters  {}", role.name(), m.parameters, m.metrics.headline());
        if let (Some(kl), Some(a)) = (m.kl_to_teacher, m.agreement) {
            line.push_str(&format!("  KL {kl:.4}  agreement {a:.4}"));
        }
        if let Some(t) = m.train_seconds {
            line.push_str(&format!("  trained {t:.0} s"));
        }
        println!("{line}");
    }
    if let Some(secs) = s.seconds {
        println!("wall time {secs:.1} s");
    }
}

/// `advise`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AdviseArgs {
    /// Runs: folders, or names as `distill-tui runs` lists them; a sweep stands for its members.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Largest model file, MB.
    #[arg(long)]
    pub max_mb: Option<f64>,
    /// Slowest decode, milliseconds per token (KV cache, this machine).
    #[arg(long)]
    pub max_ms_per_token: Option<f64>,
    /// Slowest prefill, prompt tokens per second (time to the first token).
    #[arg(long)]
    pub min_prefill_tokens_per_second: Option<f64>,
    /// Largest perplexity increase over the float teacher, percent.
    #[arg(long)]
    pub max_ppl_increase: Option<f64>,
    /// Largest KL(teacher ‖ point), nats per token.
    #[arg(long)]
    pub max_kl: Option<f64>,
    /// Smallest top-1 agreement with the teacher.
    #[arg(long)]
    pub min_agreement: Option<f64>,
    /// Longest path on this machine, minutes (a trained model: its whole run).
    #[arg(long)]
    pub max_train_minutes: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

pub fn advise(settings: &Settings, args: &AdviseArgs) -> Result<()> {
    use crate::engine::advisor::{advise, Budget};
    let budget = Budget {
        max_mb: args.max_mb,
        max_ms_per_token: args.max_ms_per_token,
        min_prefill_tokens_per_second: args.min_prefill_tokens_per_second,
        max_ppl_increase_pct: args.max_ppl_increase,
        max_kl: args.max_kl,
        min_agreement: args.min_agreement,
        max_train_minutes: args.max_train_minutes,
    };
    for (name, v) in [
        ("--max-mb", budget.max_mb),
        ("--max-ms-per-token", budget.max_ms_per_token),
        ("--min-prefill-tokens-per-second", budget.min_prefill_tokens_per_second),
        ("--max-ppl-increase", budget.max_ppl_increase_pct),
        ("--max-kl", budget.max_kl),
        ("--min-agreement", budget.min_agreement),
        ("--max-train-minutes", budget.max_train_minutes),
    ] {
        if let Some(v) = v.filter(|v| !(*v >= 0.0 && v.is_finite())) {
            return Err(Error::Invalid(format!("{name} {v}: give a number >= 0")));
        }
    }
    if budget == Budget::default() {
        return Err(Error::Invalid(
            "give at least one budget: --max-mb, --max-ms-per-token, --min-prefill-tokens-per-second, --max-ppl-increase, --max-kl, --min-agreement, --max-train-minutes".into(),
        ));
    }
    let runs = expand(settings, &args.runs)?;
    let points = points_of(&runs)?;
    let advice = advise(&points, &budget);
    if args.json {
        return super::print_json(&serde_json::json!({ "budget": budget, "advice": advice }));
    }
    println!("verdict: {}", advice.verdict.name());
    println!("{}", advice.sentence);
    for u in &advice.unmeasured {
        println!("not measured: {u}");
    }
    Ok(())
}
