#!/usr/bin/env python3
"""The real-model table of issue "Better students", from what bench/smollm2-1m/run.sh kept.

    python3 bench/smollm2-1m/report.py [RUNS_DIR]      # default: ../runs-1m

Three runs — pruned.toml and copied.toml (both distilled) and baseline.toml (the copied student on
hard labels) — each a run of its own. A finished run is read from bench/smollm2-1m/results/NAME/
(committed by run.sh when it ends: summary.json written by `distill-tui run` — held-out metrics on
Persuasion, the decode speed of teacher and student measured in that process, the teacher-judged
samples —, events.jsonl for the curves, cpu.txt); a run still going from RUNS_DIR/NAME.jsonl (its
last step and evaluation, marked so). Prints Markdown: the table, the DistilBERT sentence measured
here, the pruned student before training, and the curves. Nothing is invented: a run with no
events is "not started".
"""
import json
import statistics
import sys
from pathlib import Path

EVERY = 50  # the recipes' eval_every
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = [  # (name, label)
    ("copied", "copied 15 of 30 blocks, KD"),
    ("baseline", "copied 15 of 30 blocks, hard labels (baseline)"),
    ("pruned", "pruned by importance, KD"),
]


def load_events(path):
    """Step and eval events of the student, the last one of each step (a resumed run repeats the
    steps after its last checkpoint, and the repeat is the one that counts), and the latest step
    in file order (where the run is now)."""
    steps, evals, latest = {}, {}, None
    if not path.exists():
        return steps, evals, latest
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("role") not in (None, "student"):
            continue
        if e.get("event") == "step":
            steps[e["step"]] = e
            latest = e["step"]
        elif e.get("event") == "eval":
            evals[e["step"]] = e["metrics"]
    return steps, evals, latest


def load(runs, name):
    """(summary or None, events, cpu line, source) of one run: kept results first, else the live run."""
    kept = RESULTS / name
    if (kept / "summary.json").exists():
        cpu = (kept / "cpu.txt").read_text().splitlines()[0] if (kept / "cpu.txt").exists() else "CPU not recorded"
        return json.loads((kept / "summary.json").read_text()), load_events(kept / "events.jsonl"), cpu, kept
    cpu = (runs / "cpu.txt").read_text().splitlines()[-1].removeprefix("cpu: ") if (runs / "cpu.txt").exists() else "CPU not recorded"
    s = runs / name / "summary.json"
    summary = json.loads(s.read_text()) if s.exists() else None
    return summary, load_events(runs / f"{name}.jsonl"), cpu, runs


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def main():
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "../runs-1m")
    data = {name: load(runs, name) for name, _ in RUNS}
    teacher = next((d[0]["teacher"] for d in data.values() if d[0] and d[0].get("teacher")), None)

    print("| model | parameters | held-out perplexity | top-1 | KL to teacher | agreement | "
          "teacher's perplexity of its samples | decode tokens/s (teacher in the same process) | training tokens | state |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    if teacher:
        print(f"| teacher {teacher.get('model', '')} | {teacher['parameters']:,} | {teacher['perplexity']:.2f} | "
              f"{teacher['top1_accuracy']:.1%} | 0 | 100% | {fmt((teacher.get('samples') or {}).get('judge_perplexity'), '.2f')} | "
              f"– | – | – |")
    finished = {}
    for name, label in RUNS:
        s, (steps, evals, latest), _, _ = data[name]
        if s and s.get("student"):
            m = s["student"]
            finished[name] = m
            lat = (m.get("latency") or {}).get("decode_tokens_per_second")
            t_lat = ((s.get("teacher") or {}).get("latency") or {}).get("decode_tokens_per_second")
            print(f"| {label} | {m['parameters']:,} | {m['perplexity']:.2f} | {m['top1_accuracy']:.1%} | "
                  f"{m['kl_to_teacher']:.3f} | {m['agreement']:.1%} | "
                  f"{fmt((m.get('samples') or {}).get('judge_perplexity'), '.2f')} | "
                  f"{fmt(lat, '.1f')} ({fmt(t_lat, '.1f')}) | {s.get('training_tokens', 0):,} | finished |")
            continue
        if latest is None:
            print(f"| {label} | – | – | – | – | – | – | – | – | not started |")
            continue
        last_eval = max((k for k in evals if k <= latest), default=None)
        e = evals.get(last_eval, {}) if last_eval else {}
        print(f"| {label} | – | {fmt(e.get('perplexity'), '.2f')} | {fmt(e.get('top1_accuracy'), '.1%')} | "
              f"{fmt(e.get('kl_to_teacher'), '.3f')} | {fmt(e.get('agreement'), '.1%')} | – | – | – | "
              f"running: step {latest}/{steps[latest]['total_steps']}, "
              f"{f'metrics of step {last_eval}' if last_eval else 'no evaluation yet'} |")

    print()
    for name, label in RUNS:
        s, _, cpu, source = data[name]
        where = "kept in `bench/smollm2-1m/results/" + name + "`" if source == RESULTS / name else f"live in `{source}`"
        if s or data[name][1][2] is not None:
            print(f"- {label}: {where}; {cpu}.")

    pruned_before = None
    if (RESULTS / "pruned" / "pruned-student.json").exists():
        pruned_before = json.loads((RESULTS / "pruned" / "pruned-student.json").read_text())
    elif (runs / "pruned-student.json").exists():
        pruned_before = json.loads((runs / "pruned-student.json").read_text())
    if pruned_before:
        print(f"\nThe pruned student before any training: perplexity {pruned_before['perplexity_before_training']:.1f} on "
              f"{pruned_before['calibration_tokens']} calibration tokens (the teacher: "
              f"{pruned_before['teacher_perplexity']:.1f}), {pruned_before['parameters']:,} parameters, "
              f"layers kept {pruned_before['plan']['layers']}, {pruned_before['heads']} heads, "
              f"MLP width {pruned_before['plan']['intermediate']}.")

    if teacher:
        for name, label in RUNS:
            m = finished.get(name)
            if not m:
                continue
            s = data[name][0]
            # The speed-up against the teacher timed in the same process, right before the student.
            t_lat = ((s.get("teacher") or {}).get("latency") or {}).get("decode_tokens_per_second")
            kept_top1 = m["top1_accuracy"] / teacher["top1_accuracy"]
            fewer = 1 - m["parameters"] / teacher["parameters"]
            s_lat = (m.get("latency") or {}).get("decode_tokens_per_second")
            speed = f"{s_lat / t_lat - 1:+.0%} decode speed" if s_lat and t_lat else "decode speed not measured"
            print(f"\n**{label}**: keeps {kept_top1:.0%} of the teacher's top-1 accuracy "
                  f"(perplexity {m['perplexity']:.1f} against {teacher['perplexity']:.1f}) with {fewer:.0%} fewer "
                  f"parameters, {speed} (DistilBERT: 97% / 40% fewer / 60% faster).")

    print(f"\nCurves: held-out perplexity and KL to the teacher every {EVERY} steps, and the median training "
          f"loss of the {EVERY} steps before (a KD run's loss is its mixed soft/hard objective, the baseline's "
          f"the cross-entropy: compare losses within a column).\n")
    names = [n for n, _ in RUNS]
    print("| step | " + " | ".join(f"{n} ppl" for n in names) + " | " + " | ".join(f"{n} KL" for n in names)
          + " | " + " | ".join(f"{n} loss" for n in names) + " |")
    print("| ---: |" + " ---: |" * (3 * len(names)))
    points = sorted({k for n in names for k in data[n][1][1]})
    for step in points:
        cells = []
        for key in ("perplexity", "kl_to_teacher"):
            for n in names:
                v = data[n][1][1].get(step, {}).get(key)
                cells.append(fmt(v, ".2f" if key == "perplexity" else ".3f"))
        for n in names:
            losses = [e["loss"] for s, e in data[n][1][0].items() if step - EVERY < s <= step]
            cells.append(fmt(statistics.median(losses), ".3f") if losses else "–")
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
