"""Export real models with random weights to ONNX, with both torch.onnx exporters, for
`superopt rules reach --models shared --shared DIR`: how far the rules reach on exports beyond
the zoo and ../shared/models (benchmarks/results/reach-torchvision.md, reach-transformers.md,
reach-variants.md).

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
  256, 2-4 layers; 64 tokens, with symbolic batch and sequence under the TorchScript exporter),
  ViT, and (hidden 256, 2 layers, intermediate 512) Qwen2 and Mistral (grouped-query attention:
  2 and 1 key/value heads; Qwen2's q/k/v with biases), Phi, Gemma and the T5 encoder, built
  from their config classes, called with `return_dict=False` (and no KV cache).
- `variants`: the forms of a CNN that the `torchvision` set's exports do not show. ResNet-18 and
  ResNet-50 with `norm_layer=FrozenBatchNorm2d` (detection backbones: each BatchNorm becomes a
  Mul and an Add by (1, C, 1, 1) constants after the Conv; the frozen statistics are drawn at
  random so that the folds change the weights); ResNet-50, MobileNet-v3-large and VGG-11-BN
  exported with `do_constant_folding=False`, which keeps every BatchNormalization node; and
  Wide ResNet-50-2.
The TorchScript exporter (opset 17) folds each BatchNormalization into the Conv before it; the
dynamo exporter (`*_dynamo.onnx`) is the one torch recommends now. A model an exporter cannot
export is reported and skipped (the TorchScript exporter has no ONNX form for ViT-B/16's fused
attention, nor for `aten::diff` in GPT-2's and LLaMA's masks).

Usage: python benchmarks/export_real_models.py {torchvision,transformers,variants} OUT_DIR
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
VARIANTS = ("resnet18_frozenbn", "resnet50_frozenbn", "resnet50_bn", "mobilenet_v3_large_bn",
            "vgg11_bn", "wide_resnet50_2")


def export_variant(name: str, out_dir: Path, dynamo: bool) -> str:
    """One of `VARIANTS` (TorchScript exporter only: `dynamo` must be False)."""
    import torch
    import torchvision.models as models
    from torchvision.ops import FrozenBatchNorm2d

    if dynamo:
        raise ValueError("the variants are TorchScript exports")
    torch.manual_seed(0)
    base = name.removesuffix("_frozenbn").removesuffix("_bn")
    if name == "vgg11_bn":
        base = name
    if name.endswith("_frozenbn"):
        model = getattr(models, base)(weights=None, norm_layer=FrozenBatchNorm2d).eval()
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.shape[0]
                with torch.no_grad():
                    m.weight.copy_(torch.rand(n) + 0.5)
                    m.bias.copy_(torch.randn(n) * 0.1)
                    m.running_mean.copy_(torch.randn(n) * 0.1)
                    m.running_var.copy_(torch.rand(n) + 0.5)
    else:
        model = getattr(models, base)(weights=None).eval()
    # "_bn": BatchNormalization nodes kept (the exporter folds them into the Conv otherwise)
    return _export(model, (torch.randn(1, 3, 224, 224),), None, out_dir / f"{name}.onnx", False,
                   fold=not name.endswith("_bn"))


def export_torchvision(name: str, out_dir: Path, dynamo: bool) -> str:
    import torch
    import torchvision.models as models

    torch.manual_seed(0)
    model = getattr(models, name)(weights=None).eval()
    size = 299 if name == "inception_v3" else 224
    return _export(model, (torch.randn(1, 3, size, size),), None,
                   out_dir / f"{name}{'_dynamo' if dynamo else ''}.onnx", dynamo)


TRANSFORMERS = ("bert_small", "distilbert_small", "gpt2_small", "llama_small", "vit_small",
                "qwen2_small", "mistral_small", "phi_small", "gemma_small", "t5_encoder_small")


def export_transformers(name: str, out_dir: Path, dynamo: bool) -> str:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = {"hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}
    decoder = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 512, "vocab_size": 1000, "use_cache": False}
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
        "qwen2_small": lambda: (tf.Qwen2ForCausalLM(tf.Qwen2Config(
            num_key_value_heads=2, **decoder)), True),
        "mistral_small": lambda: (tf.MistralForCausalLM(tf.MistralConfig(
            num_key_value_heads=1, **decoder)), True),
        "phi_small": lambda: (tf.PhiForCausalLM(tf.PhiConfig(**decoder)), True),
        "gemma_small": lambda: (tf.GemmaForCausalLM(tf.GemmaConfig(
            num_key_value_heads=1, head_dim=64, **decoder)), True),
        "t5_encoder_small": lambda: (tf.T5EncoderModel(tf.T5Config(
            d_model=256, d_ff=512, num_layers=2, num_heads=4, d_kv=64, vocab_size=1000)), True),
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
            input_name: str = "input", fold: bool = True) -> str:
    import torch

    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, args, str(path), dynamo=True, input_names=[input_name],
                              external_data=False)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17,
                              input_names=[input_name], do_constant_folding=fold,
                              dynamic_axes={input_name: dynamic} if dynamic else None)
    return str(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=("torchvision", "transformers", "variants"))
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
    elif args.set == "variants":
        fn = export_variant
        jobs = [(n, False) for n in (chosen or VARIANTS)]
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
