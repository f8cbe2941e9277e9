//! The advisor: given budgets (size, serving latency, quality, training time) and the points runs
//! measured, which path meets them — quantize the teacher, distil a student, or distil then
//! quantize — with the point and a sentence of the numbers that justify it. The order of
//! preference is the resource each path spends: the teacher as it is spends nothing, quantizing
//! spends seconds and no data, distilling spends a training run; a path is only recommended when
//! every cheaper one fails the budget, and the sentence says which constraint the cheaper ones break.

use crate::engine::tradeoff::{Origin, Point};
use serde::Serialize;

/// The budgets; any may be absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Budget {
    pub max_mb: Option<f64>,
    /// Decode latency: milliseconds per token (KV cache, this machine).
    pub max_ms_per_token: Option<f64>,
    /// Prefill throughput: prompt tokens per second at least this (time to the first token).
    #[serde(default)]
    pub min_prefill_tokens_per_second: Option<f64>,
    /// Perplexity at most this many percent above the float teacher's.
    pub max_ppl_increase_pct: Option<f64>,
    /// KL(teacher ‖ point) at most this (nats per token).
    pub max_kl: Option<f64>,
    /// Top-1 agreement with the teacher at least this.
    pub min_agreement: Option<f64>,
    /// Wall minutes of the path on this machine (a trained model: its whole run).
    pub max_train_minutes: Option<f64>,
}

/// The answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    TeacherAsIs,
    Quantize,
    Distill,
    DistillThenQuantize,
    /// No measured point meets the budget.
    Nothing,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::TeacherAsIs => "the teacher as it is",
            Self::Quantize => "quantize",
            Self::Distill => "distill",
            Self::DistillThenQuantize => "distill then quantize",
            Self::Nothing => "nothing measured meets it",
        }
    }

    fn of(p: &Point) -> Self {
        match (p.origin, p.is_float()) {
            (Origin::Teacher, true) => Self::TeacherAsIs,
            (Origin::Teacher, false) => Self::Quantize,
            (_, true) => Self::Distill,
            (_, false) => Self::DistillThenQuantize,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Advice {
    pub verdict: Verdict,
    /// The point picked (or, when nothing meets the budget, the nearest one).
    pub point: Option<Point>,
    pub sentence: String,
    /// Paths or measures the points lack, and what to run to get them.
    pub unmeasured: Vec<String>,
}

/// One broken constraint: its name, the point's value and the limit.
fn breaks(p: &Point, b: &Budget, teacher_ppl: Option<f64>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut check = |ok: bool, what: String, excess: f64| {
        if !ok {
            out.push((what, excess));
        }
    };
    if let Some(mb) = b.max_mb {
        check(p.megabytes() <= mb, format!("max size {mb} MB ({:.2} MB)", p.megabytes()), p.megabytes() / mb - 1.0);
    }
    if let Some(ms) = b.max_ms_per_token {
        match p.ms_per_token() {
            Some(v) => check(v <= ms, format!("max {ms} ms/token ({v:.2} ms/token)"), v / ms - 1.0),
            None => check(false, format!("max {ms} ms/token (its speed was not measured)"), f64::INFINITY),
        }
    }
    if let Some(min) = b.min_prefill_tokens_per_second {
        match p.prefill_tokens_per_second {
            Some(v) => {
                check(v >= min, format!("min prefill {min} tokens/s ({v:.0} tokens/s)"), min / v.max(1e-9) - 1.0)
            }
            None => check(false, format!("min prefill {min} tokens/s (its speed was not measured)"), f64::INFINITY),
        }
    }
    if let Some(pct) = b.max_ppl_increase_pct {
        match teacher_ppl {
            Some(t) => {
                let inc = 100.0 * (p.perplexity / t - 1.0);
                check(inc <= pct, format!("max perplexity +{pct}% (+{inc:.1}%)"), (inc - pct) / pct.max(1.0));
            }
            None => check(false, "a perplexity bound (no float teacher measured)".into(), f64::INFINITY),
        }
    }
    if let Some(kl) = b.max_kl {
        check(p.kl <= kl, format!("max KL {kl} ({:.4})", p.kl), p.kl / kl.max(1e-12) - 1.0);
    }
    if let Some(a) = b.min_agreement {
        check(p.agreement >= a, format!("min agreement {a} ({:.4})", p.agreement), (a - p.agreement) / a.max(1e-12));
    }
    if let Some(min) = b.max_train_minutes {
        match p.cost_seconds {
            Some(s) => check(
                s / 60.0 <= min,
                format!("max {min} training minutes ({:.1})", s / 60.0),
                s / 60.0 / min.max(1e-9) - 1.0,
            ),
            None => check(false, format!("max {min} training minutes (its cost was not recorded)"), f64::INFINITY),
        }
    }
    out
}

/// The point and its measures; its prefill speed only when the budget bounds it.
fn describe(p: &Point, teacher_ppl: Option<f64>, budget: &Budget) -> String {
    let mut parts = vec![format!("{:.2} MB", p.megabytes())];
    if let Some(ms) = p.ms_per_token() {
        parts.push(format!("{ms:.2} ms/token"));
    }
    if let Some(pp) = p.prefill_tokens_per_second.filter(|_| budget.min_prefill_tokens_per_second.is_some()) {
        parts.push(format!("prefill {pp:.0} tokens/s"));
    }
    match teacher_ppl {
        Some(t) if p.origin != Origin::Teacher || !p.is_float() => {
            parts.push(format!("perplexity {:+.1}% of the teacher's", 100.0 * (p.perplexity / t - 1.0)))
        }
        _ => parts.push(format!("perplexity {:.2}", p.perplexity)),
    }
    if let Some(c) = p.cost_seconds.filter(|c| *c > 0.0) {
        parts.push(match c {
            c if c >= 120.0 => format!("{:.1} min to make", c / 60.0),
            c if c < 1.0 => format!("{c:.2} s to make"),
            c => format!("{c:.1} s to make"),
        });
    }
    format!("{} ({})", p.name(), parts.join(", "))
}

impl Budget {
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }
}

/// Which of `points` meet every bound of `budget`.
pub fn admits(points: &[Point], budget: &Budget) -> Vec<bool> {
    let teacher_ppl = points.iter().find(|p| p.origin == Origin::Teacher && p.is_float()).map(|p| p.perplexity);
    points.iter().map(|p| breaks(p, budget, teacher_ppl).is_empty()).collect()
}

/// Advises on `points` (the float teacher among them for the quality bounds) under `budget`.
pub fn advise(points: &[Point], budget: &Budget) -> Advice {
    let teacher_ppl = points.iter().find(|p| p.origin == Origin::Teacher && p.is_float()).map(|p| p.perplexity);
    // The hard-label baselines are the control of a run, not a path to recommend.
    let candidates: Vec<&Point> = points.iter().filter(|p| p.origin != Origin::Baseline).collect();
    let mut unmeasured = Vec::new();
    if !candidates.iter().any(|p| p.origin == Origin::Teacher && !p.is_float()) {
        unmeasured.push("quantization: no quantized teacher measured (a recipe's [quantize] with targets = [\"teacher\"], or `distill-tui sweep TEACHER --formats q8_0,q4_0 --out DIR`)".into());
    }
    if !candidates.iter().any(|p| p.origin == Origin::Student) {
        unmeasured.push("distillation: no student measured (`distill-tui run RECIPE`)".into());
    } else if !candidates.iter().any(|p| p.origin == Origin::Student && !p.is_float()) {
        unmeasured.push("distill then quantize: no quantized student (add \"student\" to quantize.targets)".into());
    }
    if (budget.max_ms_per_token.is_some() || budget.min_prefill_tokens_per_second.is_some())
        && candidates.iter().any(|p| p.decode_tokens_per_second.is_none())
    {
        unmeasured.push("decode speed: some points were measured before speeds were recorded (run them again)".into());
    }
    let meets = |p: &&Point| breaks(p, budget, teacher_ppl).is_empty();
    let order = [Verdict::TeacherAsIs, Verdict::Quantize, Verdict::Distill, Verdict::DistillThenQuantize];
    for (i, v) in order.iter().enumerate() {
        let mut ok: Vec<&Point> = candidates.iter().copied().filter(|p| Verdict::of(p) == *v).filter(meets).collect();
        ok.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.perplexity.total_cmp(&b.perplexity)));
        let Some(best) = ok.first() else { continue };
        // Why the cheaper paths did not do: the best of each, and what it breaks.
        let cheaper: Vec<String> = order[..i]
            .iter()
            .filter_map(|w| {
                let mut tried: Vec<&Point> = candidates.iter().copied().filter(|p| Verdict::of(p) == *w).collect();
                tried.sort_by(|a, b| {
                    let (ba, bb) = (breaks(a, budget, teacher_ppl), breaks(b, budget, teacher_ppl));
                    let excess = |v: &Vec<(String, f64)>| v.iter().map(|x| x.1).sum::<f64>();
                    ba.len().cmp(&bb.len()).then(excess(&ba).total_cmp(&excess(&bb)))
                });
                let p = tried.first()?;
                let why: Vec<String> = breaks(p, budget, teacher_ppl).into_iter().map(|b| b.0).collect();
                Some(format!("{} breaks {}", p.name(), why.join(" and ")))
            })
            .collect();
        let because = if cheaper.is_empty() { String::new() } else { format!(" — {}", cheaper.join("; ")) };
        return Advice {
            verdict: *v,
            point: Some((*best).clone()),
            sentence: format!("{}: {} meets every bound{because}", v.name(), describe(best, teacher_ppl, budget)),
            unmeasured,
        };
    }
    // Nothing: the point that breaks the fewest constraints, by the least.
    let nearest = candidates.iter().min_by(|a, b| {
        let (ba, bb) = (breaks(a, budget, teacher_ppl), breaks(b, budget, teacher_ppl));
        let excess = |v: &Vec<(String, f64)>| v.iter().map(|x| x.1).sum::<f64>();
        ba.len().cmp(&bb.len()).then(excess(&ba).total_cmp(&excess(&bb)))
    });
    let sentence = match nearest {
        Some(p) => {
            let why: Vec<String> = breaks(p, budget, teacher_ppl).into_iter().map(|b| b.0).collect();
            format!(
                "nothing measured meets it; the nearest, {}, breaks {}",
                describe(p, teacher_ppl, budget),
                why.join(" and ")
            )
        }
        None => "nothing measured yet: run a recipe or a sweep first".into(),
    };
    Advice { verdict: Verdict::Nothing, point: nearest.map(|p| (*p).clone()), sentence, unmeasured }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(origin: Origin, format: &str, mb: f64, ppl: f64, ms: f64, cost: f64) -> Point {
        Point {
            kl: 0.1,
            agreement: 0.8,
            decode_tokens_per_second: Some(1000.0 / ms),
            cost_seconds: Some(cost),
            ..Point::new(origin, format, mb, ppl)
        }
    }

    fn demo() -> Vec<Point> {
        vec![
            pt(Origin::Teacher, "float", 8.0, 75.7, 10.0, 0.0),
            pt(Origin::Teacher, "q4_0", 1.34, 75.9, 11.2, 0.2),
            pt(Origin::Student, "float", 4.8, 78.8, 5.0, 600.0),
            pt(Origin::Student, "q4_0", 0.88, 78.9, 4.1, 600.3),
            pt(Origin::Baseline, "float", 4.8, 81.6, 5.0, 600.0),
        ]
    }

    #[test]
    fn each_budget_gets_the_cheapest_path_that_meets_it() {
        let b = |mb: Option<f64>, ms: Option<f64>| Budget {
            max_mb: mb,
            max_ms_per_token: ms,
            max_ppl_increase_pct: Some(5.0),
            ..Budget::default()
        };
        let a = advise(&demo(), &b(Some(2.0), None));
        assert_eq!(a.verdict, Verdict::Quantize);
        assert!(
            a.sentence.contains("teacher q4_0") && a.sentence.contains("teacher float breaks max size 2 MB"),
            "{}",
            a.sentence
        );
        let a = advise(&demo(), &b(None, Some(8.0)));
        assert_eq!(a.verdict, Verdict::Distill, "{}", a.sentence);
        assert!(a.sentence.contains("teacher q4_0 breaks max 8 ms/token (11.20 ms/token)"), "{}", a.sentence);
        let a = advise(&demo(), &b(Some(1.0), Some(8.0)));
        assert_eq!(a.verdict, Verdict::DistillThenQuantize, "{}", a.sentence);
        assert_eq!(a.point.unwrap().name(), "student q4_0");
        let a = advise(&demo(), &Budget { max_mb: Some(0.5), ..Budget::default() });
        assert_eq!(a.verdict, Verdict::Nothing);
        assert!(
            a.sentence.contains("the nearest, student q4_0") && a.sentence.contains("max size 0.5 MB"),
            "{}",
            a.sentence
        );
        let a = advise(&demo(), &Budget { max_mb: Some(1.0), max_train_minutes: Some(5.0), ..Budget::default() });
        assert_eq!(a.verdict, Verdict::Nothing, "ten minutes of training break a five-minute budget");
    }

    #[test]
    fn missing_paths_are_named_with_what_to_run() {
        let only_teacher = vec![pt(Origin::Teacher, "float", 8.0, 75.7, 10.0, 0.0)];
        let a = advise(&only_teacher, &Budget { max_mb: Some(2.0), ..Budget::default() });
        assert_eq!(a.verdict, Verdict::Nothing);
        assert!(
            a.unmeasured.iter().any(|u| u.starts_with("quantization"))
                && a.unmeasured.iter().any(|u| u.starts_with("distillation"))
        );
    }
}
