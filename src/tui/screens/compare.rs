//! Compare: every measured point as size against quality (perplexity, KL or agreement), the
//! Pareto front, a table of the exact numbers (decode speed included), and a budget — size,
//! perplexity, decode ms/token, training minutes — on which the advisor says which path meets it.

use crate::engine::advisor::{admits, advise, Budget};
use crate::engine::distill::post_quant;
use crate::engine::eval::EvalOptions;
use crate::engine::tradeoff::{pareto_front_on, sort_points, Column, Cost, Metric, Point};
use crate::jobs::QuantPoint;
use crate::tui::app::{Action, App, Popup};
use crate::tui::input::{Edit, TextInput};
use crate::tui::keymap::{nav, step};
use crate::tui::screens::{panel, selected};
use crate::tui::widgets::pareto::ParetoData;
use crate::tui::work;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetField {
    MaxMb,
    MaxPplIncrease,
    MaxMsPerToken,
    MinPrefill,
    MaxKl,
    MinAgreement,
    MaxTrainMinutes,
}

pub struct State {
    pub points: Vec<Point>,
    pub metric: Metric,
    pub budget: Budget,
    pub row: usize,
    pub input: Option<(BudgetField, TextInput)>,
    /// The table's order: a column (best first) and whether it is reversed.
    pub sort: Column,
    pub reverse: bool,
    /// The chart's x axis and the front's cost: size or decode latency.
    pub cost: Cost,
}

impl Default for State {
    fn default() -> Self {
        Self {
            points: Vec::new(),
            metric: Metric::Perplexity,
            budget: Budget::default(),
            row: 0,
            input: None,
            sort: Column::Run,
            reverse: false,
            cost: Cost::Size,
        }
    }
}

impl State {
    pub fn editing(&self) -> bool {
        self.input.is_some()
    }

    /// Replaces the float points of the models just measured, keeping quantized points.
    pub fn set_float_points(&mut self, points: Vec<Point>) {
        self.points.retain(|p| !(p.is_float() && points.iter().any(|n| n.origin == p.origin)));
        self.points.extend(points);
        self.resort();
    }

    /// The points of a finished run: each replaces the same model's point in the same format.
    pub fn set_run_points(&mut self, points: Vec<Point>) {
        self.points.retain(|p| !points.iter().any(|n| n.run == p.run && n.origin == p.origin && n.format == p.format));
        self.points.extend(points);
        self.resort();
    }

    /// A point of a quantization sweep (see [`Point::from_quant`]); it replaces the same model's
    /// point in the same format.
    pub fn add_quant_point(&mut self, q: &QuantPoint) {
        let point = Point::from_quant(q);
        self.points.retain(|p| !(p.run == point.run && p.origin == point.origin && p.format == point.format));
        self.points.push(point);
        self.resort();
    }

    /// Puts the points in the table's order (by run, then model, largest first, unless told).
    pub fn resort(&mut self) {
        sort_points(&mut self.points, self.sort, self.reverse);
    }

    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if let Some((field, input)) = &mut self.input {
            let field = *field;
            match input.key(&key) {
                Edit::Changed => return None,
                Edit::Cancel => {}
                Edit::Submit => {
                    let text = input.text.trim().to_string();
                    let value = if text.is_empty() {
                        None
                    } else {
                        match text.parse::<f64>() {
                            Ok(v) if v >= 0.0 && v.is_finite() => Some(v),
                            _ => return Some(Action::Error(format!("budget: `{text}` is not a number ≥ 0"))),
                        }
                    };
                    match field {
                        BudgetField::MaxMb => self.budget.max_mb = value,
                        BudgetField::MaxPplIncrease => self.budget.max_ppl_increase_pct = value,
                        BudgetField::MaxMsPerToken => self.budget.max_ms_per_token = value,
                        BudgetField::MinPrefill => self.budget.min_prefill_tokens_per_second = value,
                        BudgetField::MaxKl => self.budget.max_kl = value,
                        BudgetField::MinAgreement => self.budget.min_agreement = value,
                        BudgetField::MaxTrainMinutes => self.budget.max_train_minutes = value,
                    }
                }
            }
            self.input = None;
            return None;
        }
        let show = |v: Option<f64>| TextInput::new(v.map(|v| v.to_string()).unwrap_or_default());
        match key.code {
            KeyCode::Char('e') => return Some(Action::Measure),
            KeyCode::Char('z') => return Some(Action::Quantize),
            KeyCode::Char('m') => self.metric = self.metric.next(),
            KeyCode::Char('x') => self.cost = self.cost.next(),
            KeyCode::Char('o') => {
                self.sort = self.sort.next();
                self.reverse = false;
                self.resort();
            }
            KeyCode::Char('O') => {
                self.reverse = !self.reverse;
                self.resort();
            }
            KeyCode::Char('b') => self.input = Some((BudgetField::MaxMb, show(self.budget.max_mb))),
            KeyCode::Char('s') => self.input = Some((BudgetField::MaxMsPerToken, show(self.budget.max_ms_per_token))),
            KeyCode::Char('f') => {
                self.input = Some((BudgetField::MinPrefill, show(self.budget.min_prefill_tokens_per_second)))
            }
            KeyCode::Char('v') => self.input = Some((BudgetField::MaxKl, show(self.budget.max_kl))),
            KeyCode::Char('a') => self.input = Some((BudgetField::MinAgreement, show(self.budget.min_agreement))),
            KeyCode::Char('t') => {
                self.input = Some((BudgetField::MaxTrainMinutes, show(self.budget.max_train_minutes)))
            }
            KeyCode::Char('d') => {
                self.input = Some((BudgetField::MaxPplIncrease, show(self.budget.max_ppl_increase_pct)))
            }
            _ => self.row = step(self.row, self.points.len(), nav(&key)?),
        }
        None
    }
}

/// Measures the float teacher and student on the recipe's eval text, on a job thread.
pub fn measure(app: &mut App) {
    let r = &app.recipe.recipe;
    let Some(teacher_spec) = r.teacher.as_ref().map(|t| app.model_spec(&t.model)) else {
        app.popup = Some(Popup::Error("the recipe has no teacher to measure against".into()));
        return;
    };
    let eval_files = match app.recipe.data_files(&r.data.eval, "data.eval") {
        Ok(files) => files,
        Err(e) => {
            app.popup = Some(Popup::Error(e.to_string()));
            return;
        }
    };
    let student_spec = r.student.model.as_ref().map(|m| app.model_spec(m));
    let teacher = app.loaded.get(&teacher_spec).cloned();
    let student = student_spec.as_ref().and_then(|s| app.loaded.get(s).cloned());
    let opts = EvalOptions { seq_len: r.data.seq_len, max_tokens: Some(r.data.eval_tokens), ..Default::default() };
    app.spawn("eval", format!("measure {teacher_spec} (float)"), move |ctx, out| {
        let text = eval_files
            .iter()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| crate::engine::Error::io(format!("reading {}", p.display()), e))
            })
            .collect::<crate::engine::Result<Vec<_>>>()?
            .join("\n");
        let teacher = match teacher {
            Some(t) => t,
            None => work::load(ctx, &teacher_spec)?,
        };
        let student = match (student, &student_spec) {
            (Some(s), _) => Some(s),
            (None, Some(spec)) => Some(work::load(ctx, spec)?),
            (None, None) => None,
        };
        work::float_points(ctx, out, teacher, student, &text, &opts)
    });
}

/// Sweeps the recipe's `[quantize]` formats over its targets (the teacher, and the run's student
/// and baseline once trained), on a job thread; each point arrives as a `Point` event.
pub fn quantize(app: &mut App) {
    let lr = app.recipe.clone();
    let formats = match post_quant::formats(&lr) {
        Ok(Some(f)) if !f.is_empty() => f,
        Ok(_) => {
            let msg = "no formats to sweep: set quantize.formats on the Recipe screen (2), e.g. q8_0, q4_0, int4-g64";
            app.popup = Some(Popup::Error(msg.into()));
            return;
        }
        Err(e) => {
            app.popup = Some(Popup::Error(e.to_string()));
            return;
        }
    };
    let Some(teacher_spec) = lr.recipe.teacher.as_ref().map(|t| app.model_spec(&t.model)) else {
        app.popup = Some(Popup::Error("the recipe has no teacher to measure against".into()));
        return;
    };
    let teacher = app.loaded.get(&teacher_spec).cloned();
    let names: Vec<String> = formats.iter().map(|f| f.name()).collect();
    let targets = lr.recipe.quantize.as_ref().map(|q| q.targets.join("+")).unwrap_or_default();
    app.spawn("sweep", format!("quantize {targets}: {}", names.join(", ")), move |ctx, _| {
        let teacher = match teacher {
            Some(t) => t,
            None => work::load(ctx, &teacher_spec)?,
        };
        let points = post_quant::run(&lr, Some(&teacher), &formats, ctx)?;
        serde_json::to_value(points).map_err(|e| crate::engine::Error::Invalid(e.to_string()))
    });
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.compare;
    let front = pareto_front_on(&s.points, s.cost, s.metric);
    let meets = admits(&s.points, &s.budget);
    // At least 4 rows, at most half the screen; never a panic on a short terminal (clamp would).
    let table_height = (s.points.len() as u16 + 3).min((area.height / 2).max(4));
    let [chart_area, table_area, budget_area] =
        Layout::vertical([Constraint::Min(6), Constraint::Length(table_height), Constraint::Length(5)]).areas(area);
    if s.points.is_empty() {
        let msg = "no points yet: e measures the float teacher and student, z quantizes them; runs add theirs";
        f.render_widget(Paragraph::new(msg).block(panel("accuracy vs size")), chart_area);
    } else {
        // Without a budget no point is marked as meeting it.
        let marked: Vec<bool> = meets.iter().map(|m| *m && s.budget.is_set()).collect();
        let data = ParetoData::on(&s.points, s.cost, s.metric, &front, &marked);
        f.render_widget(data.chart(s.metric, chart_area), chart_area);
    }
    let w = s.points.iter().map(|p| p.name().chars().count()).max().unwrap_or(0).max(15);
    // Prefill speed only where the path still fits beside it.
    let wide = table_area.width >= 120;
    let rate = |v: Option<f64>| v.map(|t| format!("{t:.0}")).unwrap_or_else(|| "-".into());
    let mut rows = vec![Line::from(format!(
        "   {:<w$} {:>9} {:>9} {:>6} {:>7} {:>6} {}{:>7} {:>7}  {}",
        "point",
        "size",
        "ppl",
        "top-1",
        "KL",
        "agree",
        if wide { format!("{:>8} ", "prefill") } else { String::new() },
        "tok/s",
        "cost",
        "path"
    ))];
    let height = table_area.height.saturating_sub(3) as usize;
    rows.extend(super::in_view(&s.points, s.row, height).map(|(i, p)| {
        let budget = if s.budget.is_set() && meets[i] { '$' } else { ' ' };
        Line::styled(
            format!(
                "{}{budget} {:<w$} {:>6.3} MB {:>9.3} {:>6.4} {:>7.4} {:>6.4} {}{:>7} {:>7}  {}",
                if front[i] { '*' } else { ' ' },
                p.name(),
                p.megabytes(),
                p.perplexity,
                p.top1_accuracy,
                p.kl,
                p.agreement,
                if wide { format!("{:>8} ", rate(p.prefill_tokens_per_second)) } else { String::new() },
                rate(p.decode_tokens_per_second),
                p.cost_seconds.map(short_seconds).unwrap_or_else(|| "-".into()),
                p.path()
            ),
            selected(i == s.row),
        )
    }));
    let title = format!(
        "points by {}{} (o/O): * front, $ budget; KL, agree: to teacher; tok/s: decode; cost: wall s",
        s.sort.name(),
        if s.reverse { " reversed" } else { "" }
    );
    f.render_widget(Paragraph::new(rows).block(panel(title)), table_area);
    let show = |v: Option<f64>, unit: &str| v.map(|v| format!("{v}{unit}")).unwrap_or_else(|| "none".into());
    let mut lines = vec![Line::from(match &s.input {
        Some((BudgetField::MaxMb, input)) => format!("max size (MB): {}", input.with_cursor()),
        Some((BudgetField::MaxPplIncrease, input)) => format!("max perplexity increase (%): {}", input.with_cursor()),
        Some((BudgetField::MaxMsPerToken, input)) => format!("max decode ms/token: {}", input.with_cursor()),
        Some((BudgetField::MinPrefill, input)) => format!("min prefill tokens/s: {}", input.with_cursor()),
        Some((BudgetField::MaxKl, input)) => format!("max KL to the teacher (nats): {}", input.with_cursor()),
        Some((BudgetField::MinAgreement, input)) => format!("min agreement with the teacher: {}", input.with_cursor()),
        Some((BudgetField::MaxTrainMinutes, input)) => format!("max training minutes: {}", input.with_cursor()),
        None => {
            let b = &s.budget;
            let mut parts = vec![
                format!("size {}", show(b.max_mb, " MB")),
                format!("perplexity {}", show(b.max_ppl_increase_pct, "%")),
                format!("decode {}", show(b.max_ms_per_token, " ms/token")),
            ];
            // The rarer bounds only once set, so the line fits 100 columns.
            let rare = [
                ("prefill", b.min_prefill_tokens_per_second, " tok/s"),
                ("KL", b.max_kl, ""),
                ("agreement", b.min_agreement, ""),
            ];
            parts.extend(rare.iter().filter(|(_, v, _)| v.is_some()).map(|(n, v, u)| format!("{n} {}", show(*v, u))));
            parts.push(format!("training {}", show(b.max_train_minutes, " min")));
            format!("budget: {} · axis: {} (m)", parts.join(" · "), s.metric.label())
        }
    })];
    if s.budget.is_set() {
        let advice = advise(&s.points, &s.budget);
        lines.push(Line::from(format!(
            "{}/{} in budget · {}",
            meets.iter().filter(|m| **m).count(),
            s.points.len(),
            advice.sentence
        )));
    } else {
        lines.push(Line::from(
            "b size · d ppl · s decode · f prefill · v KL · a agree · t minutes: the advisor picks the path",
        ));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true }).block(panel("Budget")),
        budget_area,
    );
}

/// `0.01s`, `56.5s`, `12m`: a path's wall time in a narrow column.
fn short_seconds(s: f64) -> String {
    match s {
        s if s < 10.0 => format!("{s:.2}s"),
        s if s < 600.0 => format!("{s:.1}s"),
        s => format!("{:.0}m", s / 60.0),
    }
}
