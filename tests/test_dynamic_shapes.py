"""Symbolic dims and dtypes (issue #11 items 1 and 2).

Models with a dynamic batch or sequence optimize without an override: the graph keeps its
symbols through the search, costs and timings use representative sizes (batch-like dims 1,
others 128, `--shape-hint` to choose), the check runs at those sizes and at a second set, and
the written model declares the original symbols, so it runs at any shape. `--overwrite-input-
shape` still fixes dims, and then everything the model declares follows. fp16 and bf16 models
optimize with the check's tolerances following the dtype.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from conftest import run_ort
from handwritten_rules import ASSOC
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt import zoo
from superopt.core.costing import NodeCount
from superopt.core.errors import CheckError, ShapeError
from superopt.core.ir import Value
from superopt.core.pattern import Bindings
from superopt.core.rules import Rule
from superopt.core.types import TensorType
from superopt.cost_model.analytic import AnalyticCost
from superopt.cost_model.symbolic import AtSizes
from superopt.face.cli import main
from superopt.pipeline.check import numerical_check
from superopt.pipeline.shapes import choose_sizes

BF16 = TensorProto.BFLOAT16


# ---------------------------------------------------------------------------------------------
# helpers


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def make_model(nodes, inputs, outputs, inits, value_info=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=list(value_info))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def matmul_chain_model(elem=TensorProto.FLOAT, batch="N", k=32, dtype=np.float32):
    """x[batch, k] -> MatMul A -> MatMul B[k, 4]: the association saves work at any batch."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s) / 8 for s in ((k, k), (k, 4)))
    x = helper.make_tensor_value_info("x", elem, [batch, k])
    y = helper.make_tensor_value_info("y", elem, [batch, 4])
    nodes = [helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1"),
             helper.make_node("MatMul", ["t", "B"], ["y"], name="mm2")]
    inits = [numpy_helper.from_array(a.astype(dtype), "A"),
             numpy_helper.from_array(b.astype(dtype), "B")]
    return make_model(nodes, [x], [y], inits)


def conv_bn_model(batch="N"):
    """x[batch, 8, 16, 16] -> Conv 3x3 -> BatchNormalization -> Relu: the shipped Conv+BN rules
    fold the BN at any batch."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16, 16, 16])
    arrays = {"W": rng.standard_normal((16, 8, 3, 3)) / 8, "scale": rng.uniform(0.5, 1.5, 16),
              "bias": rng.standard_normal(16), "mean": rng.standard_normal(16),
              "var": rng.uniform(0.5, 1.5, 16)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"],
                              name="bn"),
             helper.make_node("Relu", ["b"], ["y"], name="relu")]
    return make_model(nodes, [x], [y], inits)


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every float32 of a model as float16: initializers, Constant values, graph inputs and
    outputs, Cast targets (what converters such as onnxconverter-common do)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            if a.HasField("t") and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    return m


def declared(model: onnx.ModelProto) -> dict[str, list]:
    """{name: dims} of every input, output and value_info (a symbol as its name)."""
    g = model.graph
    return {v.name: [d.dim_param if d.HasField("dim_param") else d.dim_value
                     for d in v.type.tensor_type.shape.dim]
            for v in list(g.input) + list(g.output) + list(g.value_info)}


def symbols(model: onnx.ModelProto) -> set[str]:
    return {d for dims in declared(model).values() for d in dims if isinstance(d, str)}


def cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(["optimize", *args, "--device", "cpu"])
    return rc, capsys.readouterr().err


def roberta_ids(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(3, 2000, size=(batch, seq), dtype=np.int64)}


# ---------------------------------------------------------------------------------------------
# real exports, through the CLI


def test_dynamic_roberta_optimizes_without_an_override(shared_models, tmp_path, capsys):
    src = shared_models / "roberta_tiny.onnx"
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    rc, err = cli(capsys, str(src), str(out), "--time-limit", "5", "--json", str(report))
    assert rc == 0, err
    doc = json.loads(report.read_text())
    assert doc["check"]["passed"] and not doc["check"]["skipped"]
    # checked at the representative sizes and at a second set
    assert doc["check"]["shapes"] == [{"input_ids": [1, 128]}, {"input_ids": [2, 7]}]
    assert doc["cost_model"]["sizes"] == {"batch": 1, "seq": 128}
    original, written = onnx.load(str(src)), onnx.load(str(out))
    # every symbol the file declares is declared the same way in the output
    before, after = declared(original), declared(written)
    assert after["input_ids"] == ["batch", "seq"]
    for name, dims in before.items():
        if name in after:
            assert after[name] == dims, name
    assert symbols(original) <= symbols(written)
    for batch, seq in ((1, 16), (3, 37)):  # the written model runs at any shape
        feeds = roberta_ids(batch, seq)
        (want,), (got,) = run_ort(original, feeds), run_ort(written, feeds)
        assert got.shape == (batch, seq, 128)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_llama_decoder_optimizes_without_an_override(shared_models, tmp_path, capsys):
    """The dynamo export declares input_ids 1×32 (its shapes are baked into Reshape targets):
    it optimizes as it is, and the result computes what the original does."""
    src = shared_models / "llama_tiny_dynamo.onnx"
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    rc, err = cli(capsys, str(src), str(out), "--time-limit", "5", "--json", str(report))
    assert rc == 0, err
    doc = json.loads(report.read_text())
    assert doc["check"]["passed"] and not doc["check"]["skipped"]
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 1000, (1, 32), dtype=np.int64)}
    original, written = onnx.load(str(src)), onnx.load(str(out))
    np.testing.assert_allclose(run_ort(written, feeds)[0], run_ort(original, feeds)[0],
                               rtol=1e-4, atol=1e-5)


def test_an_override_fixes_dims_and_the_output_declares_them(shared_models, tmp_path, capsys):
    src = shared_models / "roberta_tiny.onnx"
    out = tmp_path / "out.onnx"
    rc, err = cli(capsys, str(src), str(out), "--time-limit", "3", "--cost", "analytic",
                  "--overwrite-input-shape", "input_ids:2,16")
    assert rc == 0, err
    assert "accepts only that shape" in err  # said once, as a warning
    written = onnx.load(str(out))
    assert symbols(written) == set()  # no stale symbol on inputs, outputs or value_info
    assert declared(written)["input_ids"] == [2, 16]
    assert declared(written)["last_hidden_state"] == [2, 16, 128]
    feeds = roberta_ids(2, 16)
    np.testing.assert_allclose(run_ort(written, feeds)[0],
                               run_ort(onnx.load(str(src)), feeds)[0], rtol=1e-4, atol=1e-5)


def test_an_override_restates_value_info():
    """value_info naming a fixed symbol follows the override too (load, then export)."""
    model = matmul_chain_model()
    model.graph.value_info.append(helper.make_tensor_value_info("t", TensorProto.FLOAT,
                                                                ["N", 32]))
    fixed = superopt.to_onnx(superopt.load(model, input_shapes={"x": (4, 32)}))
    assert declared(fixed) == {"x": [4, 32], "y": [4, 4], "t": [4, 32]}
    kept = superopt.to_onnx(superopt.load(model))
    assert declared(kept) == {"x": ["N", 32], "y": ["N", 4], "t": ["N", 32]}


# ---------------------------------------------------------------------------------------------
# rewrites on symbolic dims


def test_dynamic_batch_cnn_is_rewritten_and_stays_dynamic(tmp_path):
    src = save(conv_bn_model(), tmp_path / "cnn.onnx")
    out = tmp_path / "cnn.opt.onnx"
    r = superopt.optimize(src, out, device="cpu", cost="analytic", gate=False, time_limit=10)
    assert r.kept and r.steps and r.check.passed
    written = onnx.load(str(out))
    assert "BatchNormalization" not in [n.op_type for n in written.graph.node]
    assert declared(written)["x"] == ["N", 8, 16, 16]
    assert declared(written)["y"] == ["N", 16, 16, 16]
    original = onnx.load(src)
    for batch in (1, 4):
        feeds = {"x": np.random.default_rng(batch).standard_normal(
            (batch, 8, 16, 16)).astype(np.float32)}
        np.testing.assert_allclose(run_ort(written, feeds)[0], run_ort(original, feeds)[0],
                                   rtol=1e-4, atol=1e-5)


def test_shape_hints_choose_the_sizes_to_optimize_for(tmp_path):
    src = save(matmul_chain_model(batch="batch"), tmp_path / "mm.onnx")
    r = superopt.optimize(src, rules=[ASSOC], device="cpu", cost="analytic", gate=False,
                          write=False, shape_hints={"x": (8, 32)})
    assert r.cost_model["sizes"] == {"batch": 8}
    assert r.check.shapes == [{"x": [8, 32]}, {"x": [2, 32]}]
    r = superopt.optimize(src, rules=[ASSOC], device="cpu", cost="analytic", gate=False,
                          write=False, shape_hints={"batch": 2})  # by symbol; second set moves
    assert r.check.shapes == [{"x": [2, 32]}, {"x": [3, 32]}]


@pytest.mark.parametrize("hint, phrase", [
    ("x:0,32", "at least 1"), ("x:4,16", "fixed at 32"), ("nope:1,2", "no input or symbolic"),
    ("x:4", "1 dims given"), ("x:a,32", "expected NAME:DIMS"), ("seq=x", "SYMBOL=SIZE")])
def test_bad_shape_hints_exit_2_in_one_line(tmp_path, capsys, hint, phrase):
    src = save(matmul_chain_model(), tmp_path / "mm.onnx")
    rc, err = cli(capsys, src, "--cost", "analytic", "--shape-hint", hint)
    assert rc == 2 and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "mm.opt.onnx").exists()


def test_representative_sizes_and_their_naming_heuristics():
    sizes = choose_sizes({"ids": ("batch", "seq"), "mask": ("batch", "seq"),
                          "img": ("n", 3, "h", "w"), "x": (4, "?x:1")})
    assert sizes.sizes == {"batch": 1, "seq": 128, "n": 1, "h": 128, "w": 128, "?x:1": 128}
    assert sizes.second.sizes == {"batch": 2, "seq": 7, "n": 2, "h": 7, "w": 7, "?x:1": 7}
    assert sizes.shapes["x"] == (4, 128) and sizes.second.shapes["img"] == (2, 3, 7, 7)
    # a symbol named like a batch is batch-like on any axis; a hint on the second size moves
    # the second set up so that the two always differ
    other = choose_sizes({"t": (5, "batch_size", "len")}, {"len": 7})
    assert other.sizes == {"batch_size": 1, "len": 7} and other.second.sizes["len"] == 8
    assert choose_sizes({"x": (1, 3)}) is None
    with pytest.raises(ShapeError, match="two sizes|is 2 by"):
        choose_sizes({"a": ("n",), "b": ("n",)}, {"a": (2,), "b": (3,)})


def test_costs_are_taken_at_the_representative_sizes():
    """The analytic model through `AtSizes` costs the symbolic graph as the same model with
    the sizes fixed; the measured model's one-node models get plain ints."""
    sym = superopt.load(matmul_chain_model(k=64))
    fixed = superopt.load(matmul_chain_model(batch=16, k=64))
    analytic = AnalyticCost.for_device("cpu")
    model = AtSizes(analytic, {"N": 16})
    assert model.graph_cost(sym) == pytest.approx(analytic.graph_cost(fixed))
    assert AtSizes(analytic, {"N": 1}).graph_cost(sym) < model.graph_cost(sym)
    sized = model.sized_graph(sym)
    assert all(o.type.is_static for n in sized.nodes for o in n.outputs)
    assert model.describe()["sizes"] == {"N": 16} and model.unsized == 0
    from superopt.cost_model.measured import MeasuredCost

    one, feeds = MeasuredCost("cpu").one_node_model(sized.nodes[0], (False, True))
    assert feeds["in0"].shape == (16, 64)
    assert [d.dim_value for d in one.graph.input[0].type.tensor_type.shape.dim] == [16, 64]


def test_the_check_runs_at_both_sets_of_sizes():
    """A result equal to the original at batch 1 only: the second set of sizes catches it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    original = make_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], [])
    starts, ends, axes = (numpy_helper.from_array(np.array([v], np.int64), n)
                          for v, n in ((0, "s"), (1, "e"), (0, "a")))
    wrong = make_model([helper.make_node("Slice", ["x", "s", "e", "a"], ["x0"]),
                        helper.make_node("Shape", ["x"], ["shape"]),
                        helper.make_node("Expand", ["x0", "shape"], ["x1"]),
                        helper.make_node("Relu", ["x1"], ["y"])], [x], [y],
                       [starts, ends, axes])
    assert numerical_check(original, wrong, shapes=[{"x": (1, 4)}]).passed
    r = numerical_check(original, wrong, shapes=[{"x": (1, 4)}, {"x": (2, 4)}])
    assert not r.passed and "x 2×4" in r.failure


def test_conditions_over_different_symbols_are_refused():
    """`dim(?x, 0) == dim(?y, 0)` cannot be shown when the dims are different symbols: the
    matcher refuses (the same symbol is the same size, so it accepts)."""
    rule = Rule.make(["(Add ?x ?y)"], ["(Add ?y ?x)"], {"x": "tensor", "y": "tensor"},
                     conditions=["dim(?x, 0) == dim(?y, 0)"])
    a = Value.input("a", TensorType(TensorProto.FLOAT, ("batch", 4)))
    b = Value.input("b", TensorType(TensorProto.FLOAT, ("seq", 4)))
    c = Value.input("c", TensorType(TensorProto.FLOAT, ("batch", 4)))
    assert rule.holds(Bindings({"x": a, "y": b})) is not None
    assert rule.holds(Bindings({"x": a, "y": c})) is None


def test_undecidable_conditions_over_symbols_are_refused():
    """`!=`, `<`, `not ==` between two symbols (or a symbol and an int) may hold or not at run
    time: the matcher refuses. A symbol shape inference derived is not known to be one size."""
    a = Value.input("a", TensorType(TensorProto.FLOAT, ("batch", 4)))
    b = Value.input("b", TensorType(TensorProto.FLOAT, ("seq", 4)))
    for condition in ("dim(?x, 0) != dim(?y, 0)", "dim(?x, 0) != 1",
                      "not (dim(?x, 0) == dim(?y, 0))", "dim(?x, 0) < dim(?y, 0)",
                      "dim(?x, 0) == 1", "dim(?x, 0) + 1 == dim(?y, 0)",
                      "shape(?x) == (1, 4)"):
        rule = Rule.make(["(Add ?x ?y)"], ["(Add ?y ?x)"], {"x": "tensor", "y": "tensor"},
                         conditions=[condition])
        assert rule.holds(Bindings({"x": a, "y": b})) is not None, condition
    derived = Value.input("d", TensorType(TensorProto.FLOAT, ("(reshape3->1)", 4)))
    same = Rule.make(["(Add ?x ?y)"], ["(Add ?y ?x)"], {"x": "tensor", "y": "tensor"},
                     conditions=["dim(?x, 0) == dim(?y, 0)", "dim(?x, 1) == 4"])
    assert same.holds(Bindings({"x": derived, "y": derived})) is not None
    assert same.holds(Bindings({"x": a, "y": a})) is None  # the same input symbol: decidable


def test_sizing_changes_sizes_never_structure():
    """Every cost model sees the same nodes; a symbol with no size is counted, costed as 1."""
    sym = superopt.load(matmul_chain_model())
    assert AtSizes(NodeCount(), {"N": 3}).graph_cost(sym) == NodeCount().graph_cost(sym)
    unsized = AtSizes(NodeCount(), {})
    assert [n.op for n in unsized.sized_graph(sym).nodes] == ["MatMul", "MatMul"]
    assert unsized.unsized == 1 and unsized.describe()["unsized_dims"] == 1


def decoder_with_attention_mask():
    """What Hugging Face decoders export: position ids counted from the attention mask
    (cumsum(attention_mask) - 1) index the position embeddings; batch and sequence dynamic."""
    rng = np.random.default_rng(0)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])
    arrays = {"emb": rng.standard_normal((100, 16)), "pos": rng.standard_normal((160, 16)),
              "A": rng.standard_normal((16, 16)) / 4, "B": rng.standard_normal((16, 4)) / 4}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("one", 1), ("axis", 1), ("last", [-1]))]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["word"]),
             helper.make_node("CumSum", ["attention_mask", "axis"], ["count"]),
             helper.make_node("Sub", ["count", "one"], ["position_ids"]),
             helper.make_node("Gather", ["pos", "position_ids"], ["where"]),
             helper.make_node("Add", ["word", "where"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "last"], ["m3"]),
             helper.make_node("Mul", ["h", "m3"], ["hm"]),
             helper.make_node("MatMul", ["hm", "A"], ["t"]),
             helper.make_node("MatMul", ["t", "B"], ["y"])]
    return make_model(nodes, [ids, mask], [y], inits)


def test_attention_masks_counted_into_positions_are_drawn_as_ones(tmp_path, capsys):
    from superopt.runtime import input_domains, random_feeds

    model = decoder_with_attention_mask()
    domains = input_domains(model)
    assert domains["attention_mask"].kind == "ones" and "CumSum" in domains["attention_mask"].why
    assert domains["input_ids"].kind == "index" and domains["input_ids"].high == 100
    feeds = random_feeds(model, overrides={"batch": 2, "seq": 5})
    assert (feeds["attention_mask"] == 1).all()
    src = save(model, tmp_path / "dec.onnx")
    rc, err = cli(capsys, src, "--cost", "analytic", "--json", str(tmp_path / "r.json"))
    assert rc == 0, err  # checked (not refused) at batch 1 x seq 128 and 2 x 7
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["check"]["passed"] and len(doc["check"]["shapes"]) == 2
    assert "all ones" in doc["check"]["inputs"]["attention_mask"]


# ---------------------------------------------------------------------------------------------
# dtypes


def test_fp16_model_with_nothing_to_rewrite_passes_the_check(tmp_path, capsys):
    src = save(to_float16(zoo.build("squeezenet", seed=0)), tmp_path / "sq16.onnx")
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    rc, err = cli(capsys, src, str(out), "--time-limit", "5", "--json", str(report))
    assert rc == 0, err
    doc = json.loads(report.read_text())
    assert doc["check"]["passed"] and not doc["check"]["skipped"]
    assert doc["check"]["tolerances"] == {"float16": {"rtol": 1e-2, "atol": 1e-3}}
    assert out.exists()


def test_fp16_rules_apply_and_the_check_uses_fp16_tolerances(tmp_path):
    src = save(matmul_chain_model(TensorProto.FLOAT16, dtype=np.float16), tmp_path / "m.onnx")
    out = tmp_path / "m.opt.onnx"
    r = superopt.optimize(src, out, rules=[ASSOC], device="cpu", cost="analytic", gate=False)
    assert r.kept and r.check.passed and "float16" in r.check.tolerances
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == ["MatMul"]
    assert declared(written)["x"] == ["N", 32]


def bf16_io_model(batch="N", k=32):
    """bfloat16 inputs and outputs around float32 work (Cast in, MatMul, MatMul, Cast out):
    what ORT's CPU provider runs (it has no bfloat16 MatMul)."""
    model = matmul_chain_model(batch=batch, k=k)
    g = model.graph
    g.node[0].input[0] = "xf"
    g.node[-1].output[0] = "yf"
    g.node.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    g.node.append(helper.make_node("Cast", ["yf"], ["y"], to=BF16))
    g.input[0].type.tensor_type.elem_type = BF16
    g.output[0].type.tensor_type.elem_type = BF16
    return model


def test_bf16_model_optimizes_and_is_checked(tmp_path):
    src = save(bf16_io_model(), tmp_path / "bf.onnx")
    out = tmp_path / "bf.opt.onnx"
    r = superopt.optimize(src, out, rules=[ASSOC], device="cpu", cost="measured", gate=False)
    assert r.kept and r.check.passed and not r.check.skipped
    assert r.check.tolerances == {"bfloat16": {"rtol": 1e-2, "atol": 1e-3}}
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["Cast", "MatMul", "Cast"]


def test_bf16_compute_the_cpu_cannot_run_gives_one_clear_line(tmp_path):
    import ml_dtypes

    model = matmul_chain_model(BF16, dtype=ml_dtypes.bfloat16)
    src = save(model, tmp_path / "bf.onnx")
    r = superopt.optimize(src, tmp_path / "out.onnx", rules=[ASSOC], device="cpu",
                          cost="measured")
    assert not r.kept and "ONNX Runtime" in r.kept_reason  # the original, passed through
    assert r.check.skipped and "MatMul" in r.check.note


def test_bf16_feeds_are_drawn_and_fed():
    from superopt.runtime import input_domains, make_session, random_feeds, run_session

    model = bf16_io_model(batch=2)
    assert input_domains(model)["x"].kind == "real"
    feeds = random_feeds(model, seed=0)
    assert feeds["x"].dtype.name == "bfloat16" and feeds["x"].shape == (2, 32)
    session = make_session(model, "cpu", level="disable")
    with pytest.raises(RuntimeError):  # ORT cannot return bfloat16 to numpy...
        run_session(session, feeds)
    cast = onnx.ModelProto()
    cast.CopyFrom(model)
    cast.graph.node[-1].attribute[0].i = TensorProto.FLOAT  # ...a Cast to float32 can
    cast.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    (y,) = run_session(make_session(cast, "cpu", level="disable"), feeds)
    assert y.shape == (2, 4) and np.isfinite(y).all()


def test_scalar_inputs_keep_their_rank_when_timed():
    """A one-node model on a scalar (Unsqueeze of a shape element, common in symbolic graphs)
    is timed on a scalar, not on a 1-element vector."""
    from superopt.runtime import time_model

    x = helper.make_tensor_value_info("x", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1])
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    model = make_model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], [x], [y], [axes])
    assert time_model(model, "cpu", repeats=2, feeds={"x": np.array(3, np.int64)}).median_s > 0


def test_check_error_names_the_shape_that_failed(tmp_path):
    """The check's error line says at which sizes the original failed (a model that only runs
    at some sizes, here batch 1, is refused at the second set with the shape named)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [x], [y], [shape])
    with pytest.raises(CheckError, match="x 2×4"):
        superopt.optimize(model, None, rules=[ASSOC], device="cpu", cost="analytic",
                          gate=False, write=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def _to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 export turned into a float16 one: weights, inputs and outputs (as a user's
    half-precision export would be), with the stale value_info dropped."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, init in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16),
                                                                    init.name))
    for v in list(m.graph.input) + list(m.graph.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del m.graph.value_info[:]
    return m


def test_a_float16_real_export_is_rewritten_and_checked_at_float16_tolerances(shared_models,
                                                                              tmp_path):
    """shufflenet with unfused BatchNorms, in float16: the rules proved over the reals fold its
    BNs, and the check compares at float16's tolerances (rtol 1e-2, atol 1e-3)."""
    src = tmp_path / "shuf16.onnx"
    onnx.save(_to_float16(onnx.load(str(shared_models / "shufflenet_v2_x0_5_bn.onnx"))),
              str(src))
    result = superopt.optimize(src, tmp_path / "shuf16.opt.onnx", device="cpu",
                               cost="analytic", gate=False, time_limit=10)
    assert not result.original_kept
    assert sum(s.rule_id is not None for s in result.steps) >= 30
    assert result.check.passed and not result.check.skipped
    assert result.check.tolerances == {"float16": {"rtol": 1e-2, "atol": 1e-3}}
    out = onnx.load(str(tmp_path / "shuf16.opt.onnx"))
    ops = [n.op_type for n in out.graph.node]
    assert "BatchNormalization" not in ops or ops.count("BatchNormalization") < 56
    assert out.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_runtime_computed_reshapes_keep_the_input_symbols(shared_models):
    """The torchscript RoBERTa splits attention heads with Reshape(x, Concat(Shape(x)[0:2],
    ...)): ONNX's inference gives those outputs unrelated dims (unk__5, ...), which spread to
    the FFN. ONNX Runtime's symbolic inference follows the shape arithmetic, so every value
    keeps batch/seq and costs size the model right."""
    graph = superopt.load(shared_models / "roberta_tiny.onnx")
    values = [o for n in graph.nodes for o in n.outputs]
    unrelated = [v.name for v in values if v.type.shape is not None and any(
        isinstance(d, str) and d.startswith(("unk__", "?")) for d in v.type.shape)]
    assert unrelated == []
    ffn = next(n for n in graph.nodes if n.name == "/m/encoder/layer.0/output/dense/MatMul")
    assert ffn.inputs[0].type.shape == ("batch", "seq", 512)


def test_a_shape_op_costs_no_read_of_its_input():
    """Shape of a symbolic activation stays an opaque node; the roofline charged it a read of
    its input at the utilization of its 3-element output: 3.9 ms per Shape at (1, 128, 128),
    95% of torchscript RoBERTa's estimate, which hid every rewrite's gain (0.997)."""
    from superopt.cost_model.analytic import AnalyticCost
    from superopt.cost_model.symbolic import AtSizes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 128, 128])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [3])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Shape", ["x"], ["s"], name="shape")], "g", [x],
                          [s]), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = superopt.load(model)
    [node] = graph.nodes
    assert node.is_opaque and node.attr("op_type") == "Shape"
    roofline = AnalyticCost.for_device("cuda")
    cost = AtSizes(roofline, {"N": 1}, {}).graph_cost(graph)
    assert cost < 2 * roofline.roofline.overhead_s


def test_symbolic_inference_leaves_no_file_behind(shared_models, tmp_path, monkeypatch):
    """ONNX Runtime's `infer_shapes` saves sym_shape_infer_temp.onnx and its weights into the
    working directory wherever a shape stays unknown (roberta_tiny as ORT's optimizer writes
    it: contrib ops it cannot infer); loading runs its loop without that step, so the user's
    folder stays as it was."""
    from test_custom_ops import ort_optimized_roberta

    src = ort_optimized_roberta(shared_models, tmp_path / "roberta_ort.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    superopt.load(src)
    superopt.load(shared_models / "roberta_tiny.onnx")
    assert sorted(p.name for p in cwd.iterdir()) == []
