//! The Compare arithmetic (the screen's and `distill-tui compare`'s), kept pure so it is
//! unit-tested: the points a run measured, which are on the size/quality Pareto front, which
//! compression path reaches them, and the orders the table sorts by (budgets: `engine::advisor`).

mod order;

pub use order::{merge_runs, sort_points, Column};

use crate::engine::events::QuantPoint;
use crate::engine::summary::RunSummary;
use serde::Serialize;

/// Which model a point measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Origin {
    Teacher,
    Student,
    Baseline,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Self::Teacher => "teacher",
            Self::Student => "student",
            Self::Baseline => "baseline",
        }
    }

    /// Recognises the model name a quantization point carries (`teacher`, `student`, …).
    pub fn from_name(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if n.contains("baseline") {
            Self::Baseline
        } else if n.contains("student") {
            Self::Student
        } else {
            Self::Teacher
        }
    }
}

/// The quality axis of the chart, switchable with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Metric {
    Perplexity,
    Kl,
    Agreement,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Perplexity, Metric::Kl, Metric::Agreement];

    pub fn label(self) -> &'static str {
        match self {
            Self::Perplexity => "perplexity",
            Self::Kl => "KL to teacher",
            Self::Agreement => "agreement",
        }
    }

    /// Lower is better for perplexity and KL; higher for agreement.
    pub fn lower_is_better(self) -> bool {
        !matches!(self, Self::Agreement)
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|m| *m == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// One measured configuration: a model at a precision, with its size and quality against the teacher.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// The run the point belongs to, as the runs compared are told apart (`T=5`, `demo-2`); empty
    /// when only one run is shown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run: String,
    pub origin: Origin,
    /// `float` for the unquantized weights, else the quantization format (`q8_0`, `q4_k`, …).
    pub format: String,
    pub bytes: u64,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    /// KL(teacher ‖ point) per position; 0 for the float teacher.
    pub kl: f64,
    /// Top-1 agreement with the teacher; 1 for the float teacher.
    pub agreement: f64,
    /// A student trained quantization-aware in this format (`distill.qad`): the `distill+QAD` path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qad: bool,
    /// Serving speed in this format on this machine: KV-cache decode and prefill tokens/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_tokens_per_second: Option<f64>,
    /// Wall seconds of the path that made the point: quantizing it; for a trained model the whole
    /// run (teacher evaluation and logits included) plus its quantization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_seconds: Option<f64>,
    /// CPU seconds of that path (every thread), counted like `cost_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_cpu_seconds: Option<f64>,
    /// Training tokens of that path: 0 to quantize, a trained model's steps × batch × length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_tokens: Option<u64>,
}

impl Point {
    /// A point of `origin` in `format`, `megabytes` large, at `perplexity`; the other measures
    /// unset (top-1 0, KL 0, agreement 1, no speed or cost) for the caller to fill.
    pub fn new(origin: Origin, format: &str, megabytes: f64, perplexity: f64) -> Self {
        Self {
            run: String::new(),
            origin,
            format: format.into(),
            bytes: (megabytes * 1e6).round() as u64,
            perplexity,
            top1_accuracy: 0.0,
            kl: 0.0,
            agreement: 1.0,
            qad: false,
            decode_tokens_per_second: None,
            prefill_tokens_per_second: None,
            cost_seconds: None,
            cost_cpu_seconds: None,
            cost_tokens: None,
        }
    }

    pub fn megabytes(&self) -> f64 {
        self.bytes as f64 / 1e6
    }

    pub fn value(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Perplexity => self.perplexity,
            Metric::Kl => self.kl,
            Metric::Agreement => self.agreement,
        }
    }

    pub fn is_float(&self) -> bool {
        self.format == "float"
    }

    /// How this point is reached from the teacher.
    pub fn path(&self) -> &'static str {
        match (self.origin, self.is_float()) {
            (Origin::Teacher, true) => "teacher as is",
            (Origin::Teacher, false) => "quantize",
            (Origin::Student, true) => "distill",
            (Origin::Student, false) if self.qad => "distill+QAD",
            (Origin::Student, false) => "distill+quantize",
            (Origin::Baseline, true) => "small, no KD",
            (Origin::Baseline, false) => "small, no KD+quant",
        }
    }

    /// `student q4_0`, or `T=5 student q4_0` when the point names its run.
    pub fn name(&self) -> String {
        match self.run.is_empty() {
            true => format!("{} {}", self.origin.label(), self.format),
            false => format!("{} {} {}", self.run, self.origin.label(), self.format),
        }
    }

    /// A point of a quantization sweep. Its KL and agreement are to the teacher when the sweep
    /// measured them (the workbench's sweeps do), else to its own unquantized model; a
    /// classifier's accuracy stands for top-1 and exp(label cross-entropy) for perplexity.
    pub fn from_quant(q: &QuantPoint) -> Self {
        Self {
            run: String::new(),
            origin: Origin::from_name(&q.model),
            format: q.format.clone(),
            bytes: q.bytes,
            perplexity: q.metrics.perplexity.or(q.metrics.cross_entropy.map(f64::exp)).unwrap_or(f64::NAN),
            top1_accuracy: q.metrics.top1_accuracy.or(q.metrics.accuracy).unwrap_or(f64::NAN),
            kl: q.kl_to_teacher.unwrap_or(q.kl),
            agreement: q.agreement_with_teacher.unwrap_or(q.agreement),
            qad: q.qad,
            decode_tokens_per_second: q.latency.as_ref().map(|l| l.decode_tokens_per_second),
            prefill_tokens_per_second: q.latency.as_ref().map(|l| l.prefill_tokens_per_second),
            cost_seconds: q.quantize_seconds,
            cost_cpu_seconds: q.quantize_cpu_seconds,
            cost_tokens: Some(0),
        }
    }

    /// Milliseconds per decoded token, when measured.
    pub fn ms_per_token(&self) -> Option<f64> {
        self.decode_tokens_per_second.map(|t| 1000.0 / t.max(1e-9))
    }

    /// The float points a finished run measured (the teacher, the KD student and the baseline; a
    /// classifier's accuracy and exp(label cross-entropy) as above).
    pub fn float_points(summary: &RunSummary) -> Vec<Self> {
        let point = |m: Option<&crate::engine::summary::ModelSummary>, origin: Origin| {
            let m = m?;
            let teacher = origin == Origin::Teacher;
            Some(Point {
                run: String::new(),
                origin,
                format: "float".into(),
                bytes: m.parameters * 4,
                perplexity: m.metrics.perplexity.or(m.metrics.cross_entropy.map(f64::exp))?,
                top1_accuracy: m.metrics.top1_accuracy.or(m.metrics.accuracy)?,
                kl: if teacher { 0.0 } else { m.kl_to_teacher? },
                agreement: if teacher { 1.0 } else { m.agreement? },
                qad: false,
                decode_tokens_per_second: m.latency.as_ref().map(|l| l.decode_tokens_per_second),
                prefill_tokens_per_second: m.latency.as_ref().map(|l| l.prefill_tokens_per_second),
                cost_seconds: if teacher { Some(0.0) } else { summary.seconds },
                cost_cpu_seconds: if teacher { Some(0.0) } else { summary.cpu_seconds },
                cost_tokens: if teacher { Some(0) } else { summary.training_tokens },
            })
        };
        [(summary.teacher.as_ref(), Origin::Teacher), (summary.student.as_ref(), Origin::Student)]
            .into_iter()
            .chain([(summary.baseline.as_ref(), Origin::Baseline)])
            .filter_map(|(m, o)| point(m, o))
            .collect()
    }

    /// Every point of a finished run: its float models, then its `[quantize]` sweep.
    pub fn of_run(summary: &RunSummary) -> Vec<Self> {
        let mut out = Self::float_points(summary);
        out.extend(summary.quantize.iter().map(|q| {
            let mut p = Self::from_quant(q);
            // A trained model's quantized point cost its training run too.
            if p.origin != Origin::Teacher {
                p.cost_seconds = p.cost_seconds.map(|c| c + summary.seconds.unwrap_or(0.0));
                p.cost_cpu_seconds = p.cost_cpu_seconds.zip(summary.cpu_seconds).map(|(a, b)| a + b);
                p.cost_tokens = summary.training_tokens;
            }
            p
        }));
        out
    }
}

/// `true` for each point no other point beats: at most its size and at least its quality, one of
/// them strictly.
pub fn pareto_front(points: &[Point], metric: Metric) -> Vec<bool> {
    pareto_front_on(points, Cost::Size, metric)
}

/// What a point costs to serve, the chart's x axis: its size, or its decode latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cost {
    Size,
    Latency,
}

impl Cost {
    /// The point's value on this axis (MB, or ms per decoded token when measured).
    pub fn of(self, p: &Point) -> Option<f64> {
        match self {
            Self::Size => Some(p.megabytes()),
            Self::Latency => p.ms_per_token(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Size => "size (MB)",
            Self::Latency => "decode ms/token",
        }
    }

    pub fn next(self) -> Self {
        match self {
            Self::Size => Self::Latency,
            Self::Latency => Self::Size,
        }
    }
}

/// [`pareto_front`] against `cost` (size or decode latency): a point without a value on that axis
/// (its speed not measured) is neither on the front nor dominates anything.
pub fn pareto_front_on(points: &[Point], cost: Cost, metric: Metric) -> Vec<bool> {
    let better = |a: f64, b: f64| if metric.lower_is_better() { a < b } else { a > b };
    let at_least = |a: f64, b: f64| a == b || better(a, b);
    points
        .iter()
        .map(|p| {
            let Some(pc) = cost.of(p) else { return false };
            !points.iter().any(|q| {
                let Some(qc) = cost.of(q) else { return false };
                let (qv, pv) = (q.value(metric), p.value(metric));
                qc <= pc && at_least(qv, pv) && (qc < pc || better(qv, pv))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(origin: Origin, format: &str, mb: u64, ppl: f64, kl: f64, agree: f64) -> Point {
        Point { top1_accuracy: 0.3, kl, agreement: agree, ..Point::new(origin, format, mb as f64, ppl) }
    }

    fn sample() -> Vec<Point> {
        vec![
            pt(Origin::Teacher, "float", 100, 10.0, 0.0, 1.0),
            pt(Origin::Teacher, "q8_0", 27, 10.1, 0.01, 0.97),
            pt(Origin::Student, "float", 50, 14.0, 0.3, 0.7),
            pt(Origin::Student, "q8_0", 14, 14.2, 0.31, 0.69),
            pt(Origin::Baseline, "float", 50, 16.0, 0.5, 0.6),
        ]
    }

    #[test]
    fn front_drops_dominated_points() {
        let front = pareto_front(&sample(), Metric::Perplexity);
        assert_eq!(front, vec![true, true, false, true, false]);
        let front = pareto_front(&sample(), Metric::Agreement);
        assert_eq!(front, vec![true, true, false, true, false]);
    }

    #[test]
    fn the_latency_front_ranks_by_decode_speed_and_leaves_unmeasured_points_out() {
        let mut pts = sample();
        // The q8_0 teacher is small but slow; the float student is fast.
        for (p, ms) in pts.iter_mut().zip([10.0, 11.0, 4.0, 3.0, 4.0]) {
            p.decode_tokens_per_second = Some(1000.0 / ms);
        }
        pts[4].decode_tokens_per_second = None;
        assert_eq!(pareto_front_on(&pts, Cost::Latency, Metric::Perplexity), vec![true, false, true, true, false]);
        assert_eq!(pareto_front_on(&pts, Cost::Size, Metric::Perplexity), pareto_front(&pts, Metric::Perplexity));
    }

    #[test]
    fn equal_points_both_stay_on_the_front() {
        let p = vec![pt(Origin::Teacher, "float", 10, 5.0, 0.0, 1.0), pt(Origin::Student, "float", 10, 5.0, 0.0, 1.0)];
        assert_eq!(pareto_front(&p, Metric::Perplexity), vec![true, true]);
    }

    #[test]
    fn sorting_puts_the_best_first_and_merging_keeps_one_teacher() {
        let mut pts = sample();
        sort_points(&mut pts, Column::Perplexity, false);
        assert_eq!(pts[0].perplexity, 10.0);
        sort_points(&mut pts, Column::Agreement, false);
        assert_eq!(pts[0].agreement, 1.0);
        sort_points(&mut pts, Column::Size, true);
        assert_eq!(pts[0].bytes, 100_000_000);
        assert_eq!(Column::parse("KL"), Some(Column::Kl));
        let mut other = sample();
        other[2].perplexity = 13.0;
        let merged = merge_runs(&[("T=1".into(), sample()), ("T=5".into(), other)]);
        assert_eq!(merged.len(), 8, "the two teacher points once, the three student/baseline points per run");
        assert_eq!(merged[0].name(), "teacher float");
        assert!(merged.iter().any(|p| p.name() == "T=5 student float" && p.perplexity == 13.0));
    }

    #[test]
    fn origin_from_quant_point_names() {
        assert_eq!(Origin::from_name("student"), Origin::Student);
        assert_eq!(Origin::from_name("out/baseline"), Origin::Baseline);
        assert_eq!(Origin::from_name("tiny-llama"), Origin::Teacher);
    }
}
