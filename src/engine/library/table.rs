//! The tables the library prints: the runs (`distill-tui runs`) and the points of runs side by
//! side (`distill-tui compare`, the same rows the Compare screen shows), as aligned text, Markdown
//! (pastes into a README or an issue) or CSV.

use super::RunEntry;
use crate::engine::tradeoff::{pareto_front, Metric, Point};
use serde::Serialize;

/// How a table is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Csv,
}

/// One row of the points table: a point and whether it is on the Pareto front.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub point: Point,
    pub megabytes: f64,
    pub path: &'static str,
    pub pareto: bool,
}

/// The rows of `points` (in their order), the front judged on size against `metric`.
pub fn rows(points: &[Point], metric: Metric) -> Vec<Row> {
    let front = pareto_front(points, metric);
    points
        .iter()
        .zip(front)
        .map(|(p, pareto)| Row { point: p.clone(), megabytes: p.megabytes(), path: p.path(), pareto })
        .collect()
}

const HEAD: [&str; 14] = [
    "front",
    "run",
    "point",
    "MB",
    "ppl",
    "top-1",
    "KL",
    "agree",
    "prefill tok/s",
    "decode tok/s",
    "cost s",
    "cpu s",
    "train tokens",
    "path",
];

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "-".into())
}

/// `0`, `98k`, `1.2M`: a token count at a glance.
pub fn short_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn cells(r: &Row) -> [String; 14] {
    let p = &r.point;
    [
        if r.pareto { "*".into() } else { String::new() },
        if p.run.is_empty() { "-".into() } else { p.run.clone() },
        format!("{} {}", p.origin.label(), p.format),
        format!("{:.3}", r.megabytes),
        format!("{:.3}", p.perplexity),
        format!("{:.4}", p.top1_accuracy),
        format!("{:.4}", p.kl),
        format!("{:.4}", p.agreement),
        opt(p.prefill_tokens_per_second, 0),
        opt(p.decode_tokens_per_second, 0),
        opt(p.cost_seconds, 2),
        opt(p.cost_cpu_seconds, 2),
        p.cost_tokens.map(short_count).unwrap_or_else(|| "-".into()),
        r.path.to_string(),
    ]
}

/// The points table; `*` marks the Pareto front (size against `metric`).
pub fn points_table(points: &[Point], metric: Metric, format: Format) -> String {
    let rows = rows(points, metric);
    let body: Vec<[String; 14]> = rows.iter().map(cells).collect();
    let head = HEAD.map(str::to_string);
    let mut out = render(&head, &body, format, &[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    if format != Format::Csv {
        out.push_str(&format!(
            "{}* on the Pareto front of size against {}; KL and agreement to the teacher; prefill and KV-cache decode tokens/s on this machine; cost: wall and CPU seconds of the path and the tokens it trained on (a trained model: its whole run)\n",
            if format == Format::Markdown { "\n" } else { "" },
            metric.label()
        ));
    }
    out
}

/// The runs table of `distill-tui runs`.
pub fn runs_table(runs: &[RunEntry], format: Format) -> String {
    let head = ["run", "task", "status", "teacher → student", "settings", "result", "date"].map(str::to_string);
    let body: Vec<[String; 7]> = runs
        .iter()
        .map(|e| {
            let r = e.record.as_ref();
            let pair = match (r.and_then(|r| r.teacher.clone()), r.and_then(|r| r.student.clone())) {
                (Some(t), Some(s)) => format!("{} → {}", short_model(&t), s),
                (None, Some(s)) => s,
                (Some(t), None) => short_model(&t),
                (None, None) => String::new(),
            };
            let status = match (e.status, e.checkpoint_step) {
                (s, Some(step)) if s.resumable() => format!("{} @{step}", s.name()),
                (s, _) => s.name().to_string(),
            };
            [e.name.clone(), e.task(), status, pair, settings_line(e), e.best(), e.date()]
        })
        .collect();
    render(&head, &body, format, &[])
}

/// The few settings that tell runs apart in a listing.
fn settings_line(e: &RunEntry) -> String {
    if let Some(label) = e.record.as_ref().and_then(|r| r.label.clone()) {
        return label;
    }
    let s = e.settings();
    ["loss", "T", "alpha", "layers", "steps"]
        .iter()
        .filter_map(|k| s.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last part of a model path or hub id.
fn short_model(spec: &str) -> String {
    spec.trim_end_matches('/').rsplit('/').next().unwrap_or(spec).to_string()
}

fn render<const N: usize>(head: &[String; N], body: &[[String; N]], format: Format, right: &[usize]) -> String {
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(head);
            for row in body {
                let _ = w.write_record(row);
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Markdown => {
            let line = |cells: &[String; N]| {
                format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
            };
            let rule: Vec<&str> = (0..N).map(|i| if right.contains(&i) { "---:" } else { "---" }).collect();
            let mut out = line(head);
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
            body.iter().for_each(|r| out.push_str(&line(r)));
            out
        }
        Format::Text => {
            let width = |i: usize| {
                body.iter().map(|r| r[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0)
            };
            let widths: Vec<usize> = (0..N).map(width).collect();
            let line = |cells: &[String; N]| {
                let parts: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let pad = widths[i].saturating_sub(c.chars().count());
                        if right.contains(&i) {
                            format!("{}{c}", " ".repeat(pad))
                        } else {
                            format!("{c}{}", " ".repeat(pad))
                        }
                    })
                    .collect();
                format!("{}\n", parts.join("  ").trim_end())
            };
            let mut out = line(head);
            body.iter().for_each(|r| out.push_str(&line(r)));
            out
        }
    }
}
