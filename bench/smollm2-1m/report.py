#!/usr/bin/env python3
"""The real-model table of issue "Better students", from what bench/smollm2-1m/run.sh wrote.

    python3 bench/smollm2-1m/report.py [RUNS_DIR]      # default: ../runs-1m

Reads RUNS_DIR/{copied,pruned}/summary.json (each written by `distill-tui run` at the end of a
run: held-out metrics on Persuasion, the serving speed of every model measured in that process,
the teacher-judged samples), the JSON-line events RUNS_DIR/{copied,pruned}.jsonl (the curves) and
RUNS_DIR/pruned-student.json (the pruned student before training), and prints Markdown: the
result table, the DistilBERT sentence measured here, and the curves. A run that has not finished
is reported from its events (its last step and evaluation) and marked so; nothing is invented.
"""
import json
import statistics
import sys
from pathlib import Path

EVERY = 50  # the recipes' eval_every


def load_events(path):
    """Step and eval events, the last one of each (role, step): a resumed run repeats the steps
    after its last checkpoint, and the repeat is the one that counts; and each role's latest step
    in file order (where the run is now)."""
    steps, evals, latest = {}, {}, {}
    if not path.exists():
        return steps, evals, latest
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "step":
            steps[(e["role"], e["step"])] = e
            latest[e["role"]] = e["step"]
        elif e.get("event") == "eval":
            evals[(e["role"], e["step"])] = e["metrics"]
    return steps, evals, latest


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def main():
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "../runs-1m")
    summaries, events = {}, {}
    for name in ("copied", "pruned"):
        s = runs / name / "summary.json"
        summaries[name] = json.loads(s.read_text()) if s.exists() else None
        events[name] = load_events(runs / f"{name}.jsonl")
    pruned_before = None
    if (runs / "pruned-student.json").exists():
        pruned_before = json.loads((runs / "pruned-student.json").read_text())

    cpu = (runs / "cpu.txt").read_text().splitlines()[-1] if (runs / "cpu.txt").exists() else "unknown CPU"
    print(f"Runs in `{runs}`; {cpu}.\n")

    # (label, run, role)
    rows = [
        ("copied 15 of 30 blocks, KD", "copied", "student"),
        ("copied 15 of 30 blocks, hard labels (baseline)", "copied", "baseline"),
        ("pruned by importance, KD", "pruned", "student"),
    ]
    teacher = next((s["teacher"] for s in summaries.values() if s and s.get("teacher")), None)

    print("| model | parameters | held-out perplexity | top-1 | KL to teacher | agreement | "
          "teacher's perplexity of its samples | decode tokens/s | training tokens | state |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    if teacher:
        lat = teacher.get("latency") or {}
        print(f"| teacher {teacher.get('model', '')} | {teacher['parameters']:,} | {teacher['perplexity']:.2f} | "
              f"{teacher['top1_accuracy']:.1%} | 0 | 100% | {fmt((teacher.get('samples') or {}).get('judge_perplexity'), '.2f')} | "
              f"{fmt(lat.get('decode_tokens_per_second'), '.1f')} | – | – |")
    finished = {}
    for label, run, role in rows:
        s = summaries[run]
        steps, evals, latest = events[run]
        if s and s.get(role):
            m = s[role]
            finished[(run, role)] = m
            lat = m.get("latency") or {}
            print(f"| {label} | {m['parameters']:,} | {m['perplexity']:.2f} | {m['top1_accuracy']:.1%} | "
                  f"{m['kl_to_teacher']:.3f} | {m['agreement']:.1%} | "
                  f"{fmt((m.get('samples') or {}).get('judge_perplexity'), '.2f')} | "
                  f"{fmt(lat.get('decode_tokens_per_second'), '.1f')} | {s.get('training_tokens', 0):,} | finished |")
            continue
        now = latest.get(role)
        last_eval = max((k[1] for k in evals if k[0] == role and k[1] <= now), default=None) if now else None
        if now is None:
            print(f"| {label} | – | – | – | – | – | – | – | – | not started |")
            continue
        total = steps[(role, now)]["total_steps"]
        e = evals.get((role, last_eval), {}) if last_eval else {}
        print(f"| {label} | – | {fmt(e.get('perplexity'), '.2f')} | {fmt(e.get('top1_accuracy'), '.1%')} | "
              f"{fmt(e.get('kl_to_teacher'), '.3f')} | {fmt(e.get('agreement'), '.1%')} | – | – | – | "
              f"running: step {now}/{total}, metrics of step {last_eval} |")

    if pruned_before:
        print(f"\nThe pruned student before any training: perplexity {pruned_before['perplexity_before_training']:.1f} on "
              f"{pruned_before['calibration_tokens']} calibration tokens (the teacher: "
              f"{pruned_before['teacher_perplexity']:.1f}), {pruned_before['parameters']:,} parameters, "
              f"layers kept {pruned_before['plan']['layers']}, {pruned_before['heads']} heads, "
              f"MLP width {pruned_before['plan']['intermediate']}.")

    if teacher:
        for (run, role), m in finished.items():
            if role != "student":
                continue
            # The speed-up against the teacher timed in the same process, right before the student.
            t_lat = ((summaries[run].get("teacher") or {}).get("latency") or {}).get("decode_tokens_per_second")
            kept_top1 = m["top1_accuracy"] / teacher["top1_accuracy"]
            fewer = 1 - m["parameters"] / teacher["parameters"]
            s_lat = (m.get("latency") or {}).get("decode_tokens_per_second")
            speed = f"{s_lat / t_lat - 1:+.0%} decode speed" if s_lat and t_lat else "decode speed not measured"
            print(f"\n**{run} student**: keeps {kept_top1:.0%} of the teacher's top-1 accuracy "
                  f"(perplexity {m['perplexity']:.1f} against {teacher['perplexity']:.1f}) with {fewer:.0%} fewer "
                  f"parameters, {speed} (DistilBERT: 97% / 40% fewer / 60% faster).")

    print(f"\nCurves: held-out metrics every {EVERY} steps, and the median training loss of the {EVERY} steps before.\n")
    print("| step | copied KD ppl | baseline ppl | pruned KD ppl | copied KD KL | baseline KL | pruned KD KL | "
          "copied KD loss | baseline loss | pruned KD loss |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cols = [("copied", "student"), ("copied", "baseline"), ("pruned", "student")]
    points = sorted({k[1] for run in ("copied", "pruned") for k in events[run][1]})
    for step in points:
        cells = []
        for key in ("perplexity", "kl_to_teacher"):
            for run, role in cols:
                v = events[run][1].get((role, step), {}).get(key)
                cells.append(fmt(v, ".2f" if key == "perplexity" else ".3f"))
        for run, role in cols:
            losses = [e["loss"] for (r, s), e in events[run][0].items() if r == role and step - EVERY < s <= step]
            cells.append(fmt(statistics.median(losses), ".3f") if losses else "–")
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
