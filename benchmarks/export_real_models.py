"""Export real models with random weights to ONNX, with both torch.onnx exporters, for
`superopt rules reach --models shared --shared DIR`: how far the rules reach on exports beyond
the zoo and ../shared/models (benchmarks/results/reach-torchvision.md, reach-transformers.md).

torch is not a superopt dependency (it is several GB); run this with a Python that has it, e.g.
a separate virtual environment:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers onnx onnxscript
    /tmp/torchenv/bin/python benchmarks/export_real_models.py torchvision /tmp/realmodels
    superopt rules reach --models shared --shared /tmp/realmodels \\
        --out benchmarks/results/reach-torchvision.md

Weights are random (seed 0; nothing is downloaded), models in eval mode, batch 1.
- `torchvision`: CNNs and ViT-B/16 at 224x224 (Inception-v3 at 299x299), `weights=None`.
- `transformers`: small configurations of Hugging Face BERT, DistilBERT, GPT-2, LLaMA (hidden
  256, 2-4 layers; 64 tokens, with symbolic batch and sequence under the TorchScript exporter)
  and ViT, built from their config classes, called with `return_dict=False` (and no KV cache).
The TorchScript exporter (opset 17) folds each BatchNormalization into the Conv before it; the
dynamo exporter (`*_dynamo.onnx`) is the one torch recommends now. A model an exporter cannot
export is reported and skipped (the TorchScript exporter has no ONNX form for ViT-B/16's fused
attention, nor for `aten::diff` in GPT-2's and LLaMA's masks).

Usage: python benchmarks/export_real_models.py {torchvision,transformers} OUT_DIR
       [--models a,b,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TORCHVISION = ("resnet18", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small", "densenet121",
          "googlenet", "inception_v3", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
          "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0")
TORCHVISION_DYNAMO = ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "vit_b_16")


def export_torchvision(name: str, out_dir: Path, dynamo: bool) -> str:
    import torch
    import torchvision.models as models

    torch.manual_seed(0)
    model = getattr(models, name)(weights=None).eval()
    size = 299 if name == "inception_v3" else 224
    return _export(model, (torch.randn(1, 3, size, size),), None,
                   out_dir / f"{name}{'_dynamo' if dynamo else ''}.onnx", dynamo)


TRANSFORMERS = ("bert_small", "distilbert_small", "gpt2_small", "llama_small", "vit_small")


def export_transformers(name: str, out_dir: Path, dynamo: bool) -> str:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = {"hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}
    model, text = {
        "bert_small": lambda: (tf.BertModel(tf.BertConfig(num_hidden_layers=4, **small)), True),
        "distilbert_small": lambda: (tf.DistilBertModel(tf.DistilBertConfig(
            dim=256, n_layers=4, n_heads=4, hidden_dim=1024)), True),
        "gpt2_small": lambda: (tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=256, n_layer=4, n_head=4, use_cache=False)), True),
        "llama_small": lambda: (tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=512, vocab_size=1000, use_cache=False)), True),
        "vit_small": lambda: (tf.ViTModel(tf.ViTConfig(num_hidden_layers=4, **small)), False),
    }[name]()

    class FirstOutput(torch.nn.Module):
        """The model called with keywords, returning its first output as a tensor."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            key = "input_ids" if text else "pixel_values"
            return self.inner(**{key: x}, return_dict=False)[0]

    wrapped = FirstOutput(model.eval()).eval()
    if text:
        args, dynamic = (torch.randint(0, 100, (1, 64)),), {0: "batch", 1: "seq"}
    else:
        args, dynamic = (torch.randn(1, 3, 224, 224),), None
    return _export(wrapped, args, dynamic, out_dir / f"{name}{'_dynamo' if dynamo else ''}.onnx",
                   dynamo, input_name="input_ids" if text else "pixel_values")


def _export(model, args: tuple, dynamic: dict | None, path: Path, dynamo: bool,
            input_name: str = "input") -> str:
    import torch

    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, args, str(path), dynamo=True, input_names=[input_name],
                              external_data=False)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17,
                              input_names=[input_name],
                              dynamic_axes={input_name: dynamic} if dynamic else None)
    return str(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=("torchvision", "transformers"))
    parser.add_argument("out_dir")
    parser.add_argument("--models", help="comma-separated names (default: the whole set, both "
                                         "exporters)")
    args = parser.parse_args(argv[1:])
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        if args.set == "transformers":
            import transformers  # noqa: F401
    except ImportError:
        print("needs torch, torchvision and (for the transformers set) transformers: see this "
              "script's docstring", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = args.models.split(",") if args.models else None
    if args.set == "torchvision":
        fn = export_torchvision
        jobs = ([(n, False) for n in (chosen or TORCHVISION)]
                + [(n, True) for n in (chosen or TORCHVISION_DYNAMO)])
    else:
        fn = export_transformers
        jobs = [(n, d) for n in (chosen or TRANSFORMERS) for d in (False, True)]
    failed = 0
    for name, dynamo in jobs:
        try:
            print("wrote", fn(name, out_dir, dynamo), flush=True)
        except Exception as e:  # noqa: BLE001 - an exporter's failure is reported, not fatal
            failed += 1
            kind = "dynamo" if dynamo else "TorchScript"
            print(f"skipped {name} ({kind} exporter): {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:160]}", flush=True)
    return 0 if failed < len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
