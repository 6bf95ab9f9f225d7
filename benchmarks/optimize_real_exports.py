"""Run `superopt optimize` with its default settings on every ONNX file of the given folders
(the exports of benchmarks/export_real_models.py) and record each outcome in a Markdown table:
exit code, wall time of the whole command, the verdict line and whether the numerical check
passed. This is what a user sees on models the project never tuned for.

Run it on an otherwise idle machine (the gate times each candidate against the original):

    python benchmarks/optimize_real_exports.py /tmp/realmodels /tmp/hfmodels /tmp/variants \\
        --out benchmarks/results/cpu-optimize-real-exports.md

Usage: python benchmarks/optimize_real_exports.py DIR [DIR ...] [--out FILE.md]
       [--device cpu] [--note TEXT]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = {"tvmodels": "torchvision", "realmodels": "torchvision", "hf": "transformers",
           "variants": "torchvision variant"}


def _source(folder: Path) -> str:
    return next((v for k, v in SOURCES.items() if folder.name.startswith(k)), folder.name)


def optimize_one(path: Path, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "superopt", "optimize", "--device", device,
                               str(path), str(Path(tmp) / "out.onnx")],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    lines = (done.stdout + done.stderr).splitlines()
    verdict = next((ln for ln in lines if ln.startswith(("written", "original kept"))),
                   lines[-1] if lines else "")
    check = next((ln for ln in lines if ln.startswith("check:")), "")
    return {"exit": done.returncode, "wall": wall, "verdict": verdict.replace("|", "/"),
            "check": "passed" if check.startswith("check: passed") else (check or "-")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/cpu-optimize-real-exports.md")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv[1:])
    import onnx
    import onnxruntime

    import superopt
    from superopt.core.rules import load_rules

    rows = []
    for folder in map(Path, args.dirs):
        for path in sorted(folder.glob("*.onnx")):
            r = optimize_one(path, args.device)
            print(f"{path.stem}: exit {r['exit']}, {r['wall']:.1f} s, {r['verdict'][:100]}",
                  flush=True)
            rows.append((path.stem, _source(folder), r))
    n_rules = len(load_rules().proved())
    written = [m for m, _, r in rows if r["verdict"].startswith("written")]
    out = [
        "# superopt optimize on real exports (CPU)", "",
        "Every model exported by `benchmarks/export_real_models.py` (random weights; `_dynamo` = "
        "torch.onnx's dynamo exporter, else TorchScript at opset 17), optimized with the default "
        "settings: measured costs, the analytic roofline's candidate beside the measured "
        "search's, the end-to-end A/B gate, the numerical check. Written by "
        "`benchmarks/optimize_real_exports.py`; regenerate it, do not edit it.", "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {platform.machine()}, {platform.processor() or 'CPU'}; device {args.device}",
        f"- versions: superopt {superopt.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"onnx {onnx.__version__}, Python {platform.python_version()}",
        f"- rules: the shipped database, {n_rules:,} proved rules",
        f"- command: `python benchmarks/optimize_real_exports.py {' '.join(args.dirs)} "
        f"--out {args.out}` (each model: `superopt optimize --device {args.device} MODEL.onnx "
        "OUT.onnx`; wall time of the whole command)",
    ] + ([f"- note: {args.note}"] if args.note else []) + [
        "", "| model | from | exit | wall (s) | verdict | check |", "|---|---|---:|---:|---|---|",
    ] + [f"| {m} | {src} | {r['exit']} | {r['wall']:.1f} | {r['verdict']} | {r['check']} |"
         for m, src, r in rows] + [
        "", f"{len(rows)} models: {sum(r['exit'] == 0 for _, _, r in rows)} exited 0, "
        f"{sum(r['check'] == 'passed' for _, _, r in rows)} passed the check, "
        f"{len(written)} written faster ({', '.join(written) or 'none'}); the slowest took "
        f"{max((r['wall'] for _, _, r in rows), default=0):.1f} s.", ""]
    Path(args.out).write_text("\n".join(out))
    print(f"wrote {args.out}: {len(rows)} models")
    return 0 if all(r["exit"] == 0 for _, _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
