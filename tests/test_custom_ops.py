"""Ops ONNX does not know pass through: ONNX Runtime's contrib ops (`com.microsoft`), models
already through ORT's optimizers, custom-domain ops with and without their library
(`--custom-lib`).

Each model puts two chained MatMuls (which the hand-written associativity rule merges) in front
of the foreign op, so a run rewrites around it and must keep it as it is.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from handwritten_rules import ASSOC
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.errors import ModelError
from superopt.core.rules import save_rules
from superopt.face.cli import main

SEED = 0
K = 16


def foreign_op_model(path: Path, node: onnx.NodeProto, domain: str) -> Path:
    """y = Relu(OP(x @ A @ B)) with x 4×16; `node` reads "u" and writes "g" (its first output;
    a second one, if any, is added to g)."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(rng.standard_normal((K, K)).astype(np.float32) / 4, n)
             for n in ("A", "B")]
    nodes = [helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1"),
             helper.make_node("MatMul", ["t", "B"], ["u"], name="mm2"), node]
    if len(node.output) == 2:
        nodes.append(helper.make_node("Add", list(node.output), ["g"], name="join"))
    nodes.append(helper.make_node("Relu", ["g"], ["y"], name="relu"))
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid(domain, 1)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def rules_file(tmp_path) -> Path:
    path = tmp_path / "rules.json"
    save_rules([ASSOC], path)
    return path


def foreign_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]


def fast_gelu_model(path: Path) -> Path:
    # FastGelu with a bias: an ORT contrib op the CPU provider runs; ONNX knows no schema for it.
    bias = helper.make_node("FastGelu", ["u", "bias"], ["g"], domain="com.microsoft")
    path = foreign_op_model(path, bias, "com.microsoft")
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(
        np.linspace(-1, 1, K).astype(np.float32), "bias"))
    onnx.save(model, str(path))
    return path


def test_a_contrib_op_passes_through_and_the_ops_around_it_are_rewritten(tmp_path, rules_file):
    src = fast_gelu_model(tmp_path / "gelu.onnx")
    r = superopt.optimize(src, tmp_path / "out.onnx", rules=rules_file, device="cpu",
                          cost="analytic", gate=False)
    # ONNX cannot infer FastGelu's output: its type came from ONNX Runtime.
    [opaque] = [n for n in r.graph_before.nodes if n.is_opaque]
    assert opaque.outputs[0].type.shape == (4, K)
    assert [s.rule_name for s in r.steps] == ["matmul-assoc"] and r.check.passed
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in written.graph.node].count("MatMul") == 1
    [kept] = foreign_nodes(written)
    [original] = foreign_nodes(onnx.load(str(src)))
    # The node as it was; only its first input is now the merged MatMul's output.
    assert (kept.op_type, kept.domain, list(kept.output), kept.input[1:], kept.attribute) == (
        original.op_type, original.domain, list(original.output), original.input[1:],
        original.attribute)
    assert r.op_counts_before["com.microsoft::FastGelu"] == 1 == \
        r.op_counts_after["com.microsoft::FastGelu"]


def test_a_contrib_op_model_through_the_cli_exits_0(tmp_path, rules_file, capsys):
    src = fast_gelu_model(tmp_path / "gelu.onnx")
    rc = main(["optimize", str(src), str(tmp_path / "out.onnx"), "--rules", str(rules_file),
               "--device", "cpu", "--cost", "analytic", "--json", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["op_counts"]["after"]["com.microsoft::FastGelu"] == 1
    assert foreign_nodes(onnx.load(str(tmp_path / "out.onnx")))[0].op_type == "FastGelu"


def ort_optimized_roberta(shared_models: Path, out: Path) -> Path:
    """roberta_tiny as ORT's offline optimizer writes it (what
    `onnxruntime.transformers.optimizer.optimize_by_onnxruntime` does, without torch):
    FusedMatMul and BiasGelu from com.microsoft."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(shared_models / "roberta_tiny.onnx"), options,
                         providers=["CPUExecutionProvider"])
    return out


def test_a_model_through_orts_optimizer_optimizes(tmp_path, rules_file, shared_models, capsys):
    src = ort_optimized_roberta(shared_models, tmp_path / "roberta_ort.onnx")
    contrib = Counter(n.op_type for n in foreign_nodes(onnx.load(str(src))))
    assert contrib and set(contrib) <= {"FusedMatMul", "BiasGelu", "FastGelu", "Gelu",
                                        "SkipLayerNormalization", "Attention"}
    rc = main(["optimize", str(src), str(tmp_path / "out.onnx"), "--rules", str(rules_file),
               "--device", "cpu", "--cost", "analytic", "--overwrite-input-shape",
               "input_ids:1,64"])
    assert rc == 0, capsys.readouterr().err
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert Counter(n.op_type for n in foreign_nodes(out)) == contrib


def test_a_model_from_the_transformers_optimizer_optimizes(tmp_path, rules_file, shared_models,
                                                          capsys):
    try:
        from onnxruntime.transformers import optimizer

        # Fusions only (opt_level 0): the ORT pass needs torch. The fusions need sympy.
        fused = optimizer.optimize_model(str(shared_models / "roberta_tiny.onnx"),
                                         model_type="bert", num_heads=0, hidden_size=0,
                                         opt_level=0)
    except ImportError as e:
        pytest.skip(f"onnxruntime.transformers.optimizer cannot run here: {e}")
    src = tmp_path / "roberta_fused.onnx"
    fused.save_model_to_file(str(src))
    contrib = Counter(n.op_type for n in foreign_nodes(onnx.load(str(src))))
    assert contrib, "the optimizer fused nothing"
    rc = main(["optimize", str(src), str(tmp_path / "out.onnx"), "--rules", str(rules_file),
               "--device", "cpu", "--cost", "analytic", "--overwrite-input-shape",
               "input_ids:1,64"])
    assert rc == 0, capsys.readouterr().err
    assert Counter(n.op_type for n in foreign_nodes(onnx.load(str(tmp_path / "out.onnx")))) \
        == contrib


def test_a_custom_op_without_its_library_is_one_line_naming_the_node(tmp_path, capsys):
    node = helper.make_node("MyOp", ["u"], ["g"], domain="com.example")  # no name
    src = foreign_op_model(tmp_path / "custom.onnx", node, "com.example")
    rc = main(["optimize", str(src), "--device", "cpu", "--cost", "analytic"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "node MyOp (domain com.example, output 'g')" in err
    assert "--custom-lib" in err and "node )" not in err
    assert not (tmp_path / "custom.opt.onnx").exists()


def test_a_named_custom_node_is_named(tmp_path):
    node = helper.make_node("MyOp", ["u"], ["g"], domain="com.example", name="mine")
    src = foreign_op_model(tmp_path / "custom.onnx", node, "com.example")
    with pytest.raises(ModelError, match=r"node 'mine' \(MyOp, domain com.example\).*"
                                         r"--custom-lib"):
        superopt.optimize(src, device="cpu", cost="analytic", write=False)


@pytest.mark.parametrize("case", ["missing", "folder", "not a library"])
def test_custom_lib_that_cannot_load_is_one_line_exit_2(tmp_path, capsys, case):
    src = fast_gelu_model(tmp_path / "gelu.onnx")
    lib = {"missing": tmp_path / "nope.so", "folder": tmp_path,
           "not a library": tmp_path / "fake.so"}[case]
    if case == "not a library":
        lib.write_bytes(b"not an ELF file")
    rc = main(["optimize", str(src), "--custom-lib", str(lib), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--custom-lib {lib}:" in err
    assert {"missing": "no such file", "folder": "is a folder",
            "not a library": "ONNX Runtime cannot load it"}[case] in err
    assert not (tmp_path / "gelu.opt.onnx").exists()


def test_custom_lib_reaches_every_sessions_options(tmp_path, monkeypatch, rules_file):
    """No custom op library ships with this project's dependencies, so the registration is
    checked where it happens: every `SessionOptions` superopt creates gets the library."""
    import onnxruntime as ort

    import superopt.runtime as rt

    registered: list[str] = []
    sessions: list[ort.SessionOptions] = []

    class Recording(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            sessions.append(self)

        def register_custom_ops_library(self, path: str) -> None:
            registered.append((len(sessions), path))

    library = tmp_path / "libmy_ops.so"
    library.write_bytes(b"\x7fELF stand-in")
    monkeypatch.setattr(rt.ort, "SessionOptions", Recording)
    monkeypatch.setattr(rt, "_custom_op_libraries", [])
    src = fast_gelu_model(tmp_path / "gelu.onnx")
    rc = main(["optimize", str(src), str(tmp_path / "out.onnx"), "--rules", str(rules_file),
               "--device", "cpu", "--cost", "analytic", "--custom-lib", str(library),
               "--custom-lib", str(library), "-q"])  # twice: registered once
    assert rc == 0
    assert rt.custom_op_libraries() == (str(library),)
    # The probe at registration, then each session: shape inference, gate, check.
    assert len(sessions) > 3
    assert [k for k, _ in registered] == list(range(1, len(sessions) + 1))
    assert {p for _, p in registered} == {str(library)}


def test_a_real_custom_op_library_loads(tmp_path, rules_file, monkeypatch, capsys):
    extensions = pytest.importorskip(
        "onnxruntime_extensions", reason="onnxruntime-extensions (a custom op library) is not "
                                         "installed; the option is checked by monkeypatch above")
    import superopt.runtime as rt

    monkeypatch.setattr(rt, "_custom_op_libraries", [])
    node = helper.make_node("NegPos", ["u"], ["n", "p"], domain="ai.onnx.contrib")
    src = foreign_op_model(tmp_path / "ext.onnx", node, "ai.onnx.contrib")
    rc = main(["optimize", str(src), str(tmp_path / "out.onnx"), "--rules", str(rules_file),
               "--device", "cpu", "--cost", "analytic",
               "--custom-lib", extensions.get_library_path()])
    assert rc == 0, capsys.readouterr().err
    assert foreign_nodes(onnx.load(str(tmp_path / "out.onnx")))[0].op_type == "NegPos"
