"""Export torchvision models with random weights to ONNX, with both torch.onnx exporters, for
`superopt rules reach --models shared --shared DIR`: how far the rules reach on real exports
beyond the zoo and ../shared/models (benchmarks/results/reach-torchvision.md).

torch is not a superopt dependency (it is several GB); run this with a Python that has it, e.g.
a separate virtual environment:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript
    /tmp/torchenv/bin/python benchmarks/export_torchvision.py /tmp/realmodels
    superopt rules reach --models shared --shared /tmp/realmodels \\
        --out benchmarks/results/reach-torchvision.md

Weights are random (`weights=None`, seed 0: nothing is downloaded), the models in eval mode,
batch 1 at 224x224 (Inception-v3 at 299x299). The TorchScript exporter (opset 17) folds each
BatchNormalization into the Conv before it; the dynamo exporter (`*_dynamo.onnx`) is the one
torch recommends now. A model an exporter cannot export is reported and skipped (the
TorchScript exporter has no ONNX form for ViT's fused attention).

Usage: python benchmarks/export_torchvision.py OUT_DIR [--models a,b,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LEGACY = ("resnet18", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
          "googlenet", "inception_v3", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
          "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0")
DYNAMO = ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "vit_b_16")


def export(name: str, out_dir: Path, dynamo: bool) -> str:
    import torch
    import torchvision.models as models

    torch.manual_seed(0)
    model = getattr(models, name)(weights=None).eval()
    size = 299 if name == "inception_v3" else 224
    x = torch.randn(1, 3, size, size)
    path = out_dir / f"{name}{'_dynamo' if dynamo else ''}.onnx"
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    return str(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--models", help="comma-separated torchvision names (default: the "
                                         "sets above, both exporters)")
    args = parser.parse_args(argv[1:])
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        print("needs torch and torchvision (see this script's docstring)", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = args.models.split(",") if args.models else None
    jobs = [(n, False) for n in (chosen or LEGACY)] + [(n, True) for n in (chosen or DYNAMO)]
    failed = 0
    for name, dynamo in jobs:
        try:
            print("wrote", export(name, out_dir, dynamo), flush=True)
        except Exception as e:  # noqa: BLE001 - an exporter's failure is reported, not fatal
            failed += 1
            kind = "dynamo" if dynamo else "TorchScript"
            print(f"skipped {name} ({kind} exporter): {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:160]}", flush=True)
    return 0 if failed < len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
