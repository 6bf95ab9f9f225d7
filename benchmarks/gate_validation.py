"""Validate the end-to-end gate (`superopt.pipeline.gate.compare_models`) on this machine.

Parts (run each under the timing lock, one at a time; each writes a JSON file of raw results
into --out, and --write-doc turns whatever parts exist into the tables of docs/gate.md):

- ``null``: self-comparisons, the original against itself (A, A′ and the candidate are three
  copies of one zoo model), round-robin over the zoo models. Every win is a false win. Each
  trial also records the gain it would have needed to win (its last look's threshold): per
  model, the median of those is the smallest gain the gate can certify at that budget.
- ``power``: true gains built by construction. The baseline is the model plus a side chain of
  `k` cheap Sin ops on a slice of its input (an extra graph output, so nothing folds it away);
  `k` is calibrated so that the baseline is 5%, 10%, 20% slower, and the real ratio is checked
  in a long run of the gate's loop (`SessionRounds`, many rounds, 3 slots). Trials at the
  default budget and at `--power-scale` times it.
- ``nasrnn``: NasRNN's merged-MatMul candidate (the analytic search's rewrites, gate off)
  against the original at the default budget; its real ratio from a long interleaved run.
- ``alone``: the same pair as a user runs them: one default (spinning) session alone at a
  time, alternating between whole blocks of runs.

Example (the commands behind docs/gate.md; seeds are printed and fixed):
    L=/tmp/superopt-timing.lock; V=benchmarks/gate_validation.py
    flock $L .venv/bin/python $V null --trials 100
    flock $L .venv/bin/python $V nasrnn --trials 10
    flock $L .venv/bin/python $V power --trials 20 --trials-scaled 8
    .venv/bin/python $V --write-doc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gate_validation"
DOC = ROOT / "docs" / "gate.md"
BEGIN, END = "<!-- gate-validation:begin -->", "<!-- gate-validation:end -->"


def load_1min() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def trial_record(result, **extra) -> dict:
    return {"won": bool(result.best_index is not None), "ratio": result.ratios[0],
            "needs": 1.0 + result.margins[0], "p": result.p_values[0],
            "control": result.control_ratio, "rounds": result.rounds,
            "runs_per_round": result.runs_per_round, "sessions": result.sessions,
            "looks": result.looks, "stop": result.stop, "elapsed_s": result.elapsed_s,
            "load": load_1min(), **extra}


# ---------------------------------------------------------------------------------------------
# constructed gains


def with_side_chain(model: onnx.ModelProto, k: int, elements: int = 4096) -> onnx.ModelProto:
    """`model` plus k Sin ops on the first `elements` values of its first input, as an extra
    output "gate_pad": slower by k small kernels, same outputs otherwise."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if k <= 0:
        return out
    g = out.graph
    x = g.input[0].name
    g.initializer.extend([
        helper.make_tensor("gate_pad_shape", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("gate_pad_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("gate_pad_end", TensorProto.INT64, [1], [elements]),
    ])
    g.node.append(helper.make_node("Reshape", [x, "gate_pad_shape"], ["gate_pad_flat"],
                                   name="gate_pad_reshape"))
    g.node.append(helper.make_node("Slice", ["gate_pad_flat", "gate_pad_start", "gate_pad_end"],
                                   ["gate_pad_0"], name="gate_pad_slice"))
    for i in range(k):
        g.node.append(helper.make_node("Sin", [f"gate_pad_{i}"], [f"gate_pad_{i + 1}"],
                                       name=f"gate_pad_sin{i}"))
    g.node.append(helper.make_node("Identity", [f"gate_pad_{k}"], ["gate_pad"],
                                   name="gate_pad_out"))
    g.output.append(helper.make_tensor_value_info("gate_pad", TensorProto.FLOAT, [elements]))
    return out


def long_ratio(slow: onnx.ModelProto, fast: onnx.ModelProto, rounds: int, seed: int) -> dict:
    """slow / fast from a long run of the gate's own loop without its test (`SessionRounds`:
    3 slots, random build and round order, sessions whose threads spin within a run and stop
    when it returns, as the gate's; 3 runs per round): the median of per-round ratios."""
    from superopt.runtime import SessionRounds

    timer = SessionRounds([slow.SerializeToString(), fast.SerializeToString()], "cpu",
                          sessions=3, seed=seed)
    timer.runs_per_round = 3
    timer.run(rounds)
    a, b = (np.asarray(t) for t in timer.times)
    return {"ratio": float(np.median(a / b)), "ratio_of_medians":
            float(np.median(a) / np.median(b)), "fast_median_s": float(np.median(b)),
            "rounds": rounds, "load": load_1min()}


def calibrate(model: onnx.ModelProto, gains: list[float], seed: int, rounds: int) -> dict:
    """Side-chain lengths giving each gain, from the cost of a 64-op chain."""
    probe = 64
    r = long_ratio(with_side_chain(model, probe), model, rounds, seed)
    base_s = r["fast_median_s"]
    per_op = (r["ratio"] - 1.0) * base_s / probe
    ks = {str(g): max(1, round(g * base_s / max(per_op, 1e-9))) for g in gains}
    return {"probe_ratio": r["ratio"], "base_s": base_s, "per_op_s": per_op, "k": ks}


# ---------------------------------------------------------------------------------------------
# parts


def part_null(args) -> dict:
    from superopt import zoo
    from superopt.pipeline.gate import compare_models

    models = args.models.split(",") if args.models else zoo.list_models()
    built = {name: zoo.build(name, 0) for name in models}
    trials = []
    for t in range(args.trials):
        name = models[t % len(models)]
        seed = args.seed + t
        result = compare_models(built[name], [built[name]], "cpu", budget_s=args.budget,
                                seed=seed)
        rec = trial_record(result, model=name, seed=seed)
        trials.append(rec)
        print(f"null {t + 1}/{args.trials} {name} seed {seed}: {'WIN' if rec['won'] else 'no'} "
              f"ratio {rec['ratio']:.3f} needs {rec['needs']:.3f} A/A' {rec['control']:.3f} "
              f"p {rec['p']:.2g} {rec['elapsed_s']:.1f}s load {rec['load']:.2f}", flush=True)
    return {"budget_s": args.budget, "trials": trials}


def part_power(args) -> dict:
    from superopt import zoo
    from superopt.pipeline.gate import compare_models

    model = zoo.build(args.power_model, 0)
    gains = [float(g) / 100 for g in args.gains.split(",")]
    cal = calibrate(model, gains, args.seed, args.check_rounds)
    print(f"calibration on {args.power_model}: {cal}", flush=True)
    out = {"model": args.power_model, "calibration": cal, "gains": {}}
    budgets = [args.budget, args.budget * args.power_scale]
    for g in gains:
        slow = with_side_chain(model, cal["k"][str(g)])
        check = long_ratio(slow, model, args.check_rounds, args.seed)
        print(f"gain {g:.0%}: k {cal['k'][str(g)]}, long run {check['ratio']:.3f}x", flush=True)
        entry = {"k": cal["k"][str(g)], "check": check, "budgets": {}}
        for b in budgets:
            n = args.trials if b == args.budget else args.trials_scaled
            recs = []
            for t in range(n):
                seed = args.seed + 1000 * t + int(g * 100)
                result = compare_models(slow, [model], "cpu", budget_s=b, seed=seed)
                rec = trial_record(result, seed=seed)
                recs.append(rec)
                print(f"  gain {g:.0%} budget {b:g}s trial {t + 1}/{n} seed {seed}: "
                      f"{'accept' if rec['won'] else 'reject'} ratio {rec['ratio']:.3f} needs "
                      f"{rec['needs']:.3f} {rec['elapsed_s']:.1f}s ({rec['stop']}) load "
                      f"{rec['load']:.2f}", flush=True)
            entry["budgets"][f"{b:g}"] = recs
        out["gains"][f"{g:g}"] = entry
    return out


def nasrnn_candidate() -> tuple[onnx.ModelProto, onnx.ModelProto, int]:
    """NasRNN and its analytic search's best graph (gate and check off)."""
    import superopt
    from superopt import zoo
    from superopt.core.onnx_io import to_onnx

    model = zoo.build("nasrnn", 0)
    result = superopt.optimize(model, cost="analytic", device="cpu", gate=False, check=False,
                               write=False, time_limit=600.0)
    return to_onnx(result.graph_before), to_onnx(result.graph_after), len(result.steps)


def part_nasrnn_long(args) -> dict:
    """The same candidate through the gate's own measuring loop at a long budget: the paired,
    A/A′-controlled estimate of its real ratio (random build and round order, unlike
    `time_interleaved`, which builds and times the original first)."""
    original, merged, rewrites = nasrnn_candidate()
    recs = _gate_trials(original, merged, args, "nasrnn long",
                        lambda r: f"A/A' {r['control']:.3f} {r['rounds']} rounds "
                                  f"{r['sessions']} sessions ")
    return {"rewrites": rewrites, "budget_s": args.budget, "trials": recs}


def _gate_trials(original, merged, args, label: str, detail=lambda rec: "") -> list[dict]:
    """`args.trials` runs of the gate on one candidate (seeds args.seed + t), each printed."""
    from superopt.pipeline.gate import compare_models

    recs = []
    for t in range(args.trials):
        seed = args.seed + t
        result = compare_models(original, [merged], "cpu", budget_s=args.budget, seed=seed)
        rec = trial_record(result, seed=seed)
        recs.append(rec)
        print(f"  {label} trial {t + 1}/{args.trials} seed {seed}: "
              f"{'accept' if rec['won'] else 'reject'} ratio {rec['ratio']:.3f} needs "
              f"{rec['needs']:.3f} {detail(rec)}{rec['elapsed_s']:.1f}s load "
              f"{rec['load']:.2f}", flush=True)
    return recs


def part_alone(args) -> dict:
    """NasRNN's candidate and the original as a user runs them: one session with ONNX
    Runtime's default threads (spinning during and after runs), alone in the process (the
    other model's session is gone, and its threads have stopped), the two alternating in a
    random order between whole blocks of runs; `args.trials` rounds of 20 warm-up and 200 timed
    runs per model, the median of each block. What the gate's "in-run" sessions stand for."""
    import gc

    from superopt.runtime import Runner, make_session, random_feeds

    original, merged, rewrites = nasrnn_candidate()
    feeds = random_feeds(original, args.seed)
    rng = np.random.default_rng(args.seed)
    times: list[list[float]] = [[], []]
    for r in range(args.trials):
        for m in rng.permutation(2):
            runner = Runner(make_session((original, merged)[m], "cpu", spinning="on"), feeds)
            runner.times(20)
            times[m].append(float(np.median(runner.times(200))))
            del runner
            gc.collect()
            time.sleep(0.2)  # the default threads spin some 35 ms after a run
        print(f"  alone round {r + 1}/{args.trials}: original {times[0][-1] * 1e6:.0f} µs, "
              f"candidate {times[1][-1] * 1e6:.0f} µs, ratio {times[0][-1] / times[1][-1]:.3f}",
              flush=True)
    ratios = np.asarray(times[0]) / np.asarray(times[1])
    return {"rewrites": rewrites, "rounds": args.trials, "ratio": float(np.median(ratios)),
            "p10": float(np.percentile(ratios, 10)), "p90": float(np.percentile(ratios, 90)),
            "original_s": float(np.median(times[0])), "candidate_s": float(np.median(times[1])),
            "load": load_1min()}


def part_nasrnn(args) -> dict:

    original, merged, rewrites = nasrnn_candidate()
    matmuls = [sum(n.op_type == "MatMul" for n in m.graph.node) for m in (original, merged)]
    check = long_ratio(original, merged, args.check_rounds, args.seed)
    print(f"nasrnn: {rewrites} rewrites, MatMuls {matmuls[0]} -> {matmuls[1]}, long run "
          f"{check['ratio']:.3f}x", flush=True)
    recs = _gate_trials(original, merged, args, "nasrnn")
    return {"rewrites": rewrites, "matmuls": matmuls, "check": check, "budget_s": args.budget,
            "trials": recs}


# ---------------------------------------------------------------------------------------------
# the document


def _pct(x: float) -> str:
    return f"{x:.0%}"


def render(parts: dict) -> str:
    lines = []
    meta = parts.get("meta", {})
    loads = [t["load"] for p in ("null", "power", "nasrnn", "nasrnn-long") if p in parts
             for t in _all_trials(parts[p]) if not math.isnan(t.get("load", math.nan))]
    if meta:
        lines += [f"- recorded: {meta.get('date', '?')}; {meta.get('machine', '')}",
                  f"- versions: {meta.get('versions', '')}"]
    if loads:
        lines.append(f"- machine load during the trials (1-minute load average on 2 cores, "
                     f"read at the end of each trial): median {np.median(loads):.2f}, "
                     f"10th-90th percentile {np.percentile(loads, 10):.2f}-"
                     f"{np.percentile(loads, 90):.2f}, max {max(loads):.2f}")
    for part in ("null", "power", "nasrnn", "alone", "nasrnn-long"):
        if part in parts:
            lines.append(f"- `{part}`: `{parts[part].get('command', '')}`")
    lines.append("")
    if "null" in parts:
        null = parts["null"]
        trials = null["trials"]
        wins = sum(t["won"] for t in trials)
        lines += [f"### False wins: {wins} in {len(trials)} self-comparisons "
                  f"(budget {null['budget_s']:g} s)", "",
                  "| model | trials | false wins | median A/A′ | smallest certifiable gain "
                  "(median needed) | 90th pct needed | median seconds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in dict.fromkeys(t["model"] for t in trials):
            ts = [t for t in trials if t["model"] == name]
            needs = [t["needs"] for t in ts]
            lines.append(
                f"| {name} | {len(ts)} | {sum(t['won'] for t in ts)} | "
                f"{np.median([t['control'] for t in ts]):.3f} | "
                f"{np.median(needs) - 1:.1%} | {np.percentile(needs, 90) - 1:.1%} | "
                f"{np.median([t['elapsed_s'] for t in ts]):.1f} |")
        lines.append("")
    if "power" in parts:
        power = parts["power"]
        cal = power["calibration"]
        budgets = [b for b, r in next(iter(power["gains"].values()))["budgets"].items() if r]
        lines += [f"### Detection power on {power['model']} (true gains built by construction)",
                  "",
                  f"Baseline = {power['model']} plus a chain of k Sin ops on 4096 input values "
                  f"(one op ≈ {cal['per_op_s'] * 1e6:.1f} µs against "
                  f"{cal['base_s'] * 1e3:.2f} ms for the model); the candidate is the model "
                  "itself.", "",
                  "| target gain | k | real ratio (long run) | "
                  + " | ".join(f"accepted at {b} s" for b in budgets)
                  + " | " + " | ".join(f"median s at {b} s" for b in budgets) + " |",
                  "|---|---:|---:|" + "---:|" * (2 * len(budgets))]
        for g, entry in power["gains"].items():
            acc = [entry["budgets"][b] for b in budgets]
            lines.append(
                f"| {float(g):.0%} | {entry['k']} | {entry['check']['ratio']:.3f}x | "
                + " | ".join(f"{sum(t['won'] for t in r)}/{len(r)} "
                             f"({sum(t['won'] for t in r) / max(1, len(r)):.0%})" for r in acc)
                + " | " + " | ".join(f"{np.median([t['elapsed_s'] for t in r]):.1f}"
                                     for r in acc) + " |")
        lines.append("")
    if "nasrnn" in parts:
        nas = parts["nasrnn"]
        trials = nas["trials"]
        acc = sum(t["won"] for t in trials)
        lines += [f"### NasRNN's merged-MatMul candidate: accepted in {acc} of {len(trials)} "
                  f"runs (budget {nas['budget_s']:g} s)", "",
                  f"{nas['rewrites']} rewrites, MatMuls {nas['matmuls'][0]} → "
                  f"{nas['matmuls'][1]}; real ratio in a long interleaved run "
                  f"({nas['check']['rounds']} rounds, 3 sessions each): "
                  f"{nas['check']['ratio']:.3f}x. Per run: ratio measured by the gate "
                  f"(median {np.median([t['ratio'] for t in trials]):.3f}x), gain needed "
                  f"(median {np.median([t['needs'] for t in trials]):.3f}x).", ""]
    if "alone" in parts:
        alone = parts["alone"]
        lines += [f"As a user runs it (one default, spinning session alone, the two models "
                  f"alternating between whole blocks of runs, {alone['rounds']} rounds): "
                  f"original {alone['original_s'] * 1e3:.2f} ms, candidate "
                  f"{alone['candidate_s'] * 1e3:.2f} ms, ratio {alone['ratio']:.3f}x "
                  f"(10th-90th percentile of rounds {alone['p10']:.3f}-{alone['p90']:.3f}x).",
                  ""]
    if "nasrnn-long" in parts:
        long = parts["nasrnn-long"]
        lines += [f"The same candidate through the gate's own loop at a {long['budget_s']:g} s "
                  "budget (random build and round order, A/A′ control):", "",
                  "| seed | ratio | needs | A/A′ | rounds | sessions | accepted |",
                  "|---:|---:|---:|---:|---:|---:|---|"]
        for t in long["trials"]:
            lines.append(f"| {t['seed']} | {t['ratio']:.3f}x | {t['needs']:.3f}x | "
                         f"{t['control']:.3f} | {t['rounds']} | {t['sessions']} | "
                         f"{'yes' if t['won'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def _all_trials(part: dict) -> list[dict]:
    if "trials" in part:
        return part["trials"]
    return [t for e in part["gains"].values() for r in e["budgets"].values() for t in r]


def write_doc(out: Path, section: str = "") -> None:
    begin, end = (BEGIN, END) if not section else (
        f"<!-- gate-validation:{section}:begin -->", f"<!-- gate-validation:{section}:end -->")
    parts = {}
    for name in ("meta", "null", "power", "nasrnn", "alone", "nasrnn-long"):
        path = out / f"{name}.json"
        if path.exists():
            parts[name] = json.loads(path.read_text())
    text = DOC.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{DOC} has no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{render(parts)}\n{end}{tail}")
    print(f"wrote the tables of {DOC}")


def main(argv: list[str] | None = None) -> int:
    from superopt.pipeline.gate import DEFAULT_BUDGET_S

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", nargs="?", choices=("null", "power", "nasrnn", "alone",
                                               "nasrnn-long"))
    p.add_argument("--trials", type=int, default=20, help="trials (null: in all; power: per "
                   "gain at the default budget; nasrnn: runs)")
    p.add_argument("--trials-scaled", type=int, default=10,
                   help="power trials per gain at the scaled budget")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S)
    p.add_argument("--power-scale", type=float, default=4.0)
    p.add_argument("--gains", default="5,10,20", help="percent, comma-separated")
    p.add_argument("--power-model", default="squeezenet")
    p.add_argument("--models", default="", help="null: comma-separated zoo models (default all)")
    p.add_argument("--check-rounds", type=int, default=45)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--write-doc", action="store_true")
    p.add_argument("--section", default="", help="--write-doc: the docs/gate.md section "
                   "(<!-- gate-validation:SECTION:begin -->) to fill from --out")
    args = p.parse_args(argv)
    if args.part:
        print(f"gate_validation {args.part}: seed {args.seed}, budget {args.budget:g} s, "
              f"load {load_1min():.2f}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        data = {"null": part_null, "power": part_power, "nasrnn": part_nasrnn,
                "alone": part_alone, "nasrnn-long": part_nasrnn_long}[args.part](args)
        data["command"] = "benchmarks/gate_validation.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]))
        data["wall_s"] = time.time() - started
        (args.out / f"{args.part}.json").write_text(json.dumps(data, indent=1))
        import onnxruntime

        from superopt.runtime import device_name

        meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{device_name('cpu')}; os.cpu_count() {os.cpu_count()}",
                "versions": f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
                            f"Python {platform.python_version()}"}
        (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    if args.write_doc:
        write_doc(args.out, args.section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
