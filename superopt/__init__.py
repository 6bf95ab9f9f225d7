"""superopt: a tensor-graph superoptimizer for ONNX models, in the line of TASO.

Public API:
    >>> import superopt
    >>> g = superopt.load("model.onnx")           # doctest: +SKIP
    >>> superopt.save(g, "copy.onnx")              # doctest: +SKIP
    >>> r = superopt.optimize("model.onnx", device="cpu")   # doctest: +SKIP
    >>> r.verdict                                  # doctest: +SKIP
    'written: faster'

`import superopt` never imports z3 (only the verifier needs it), nor the optimization pipeline
or ONNX Runtime: `optimize` imports them on its first call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import onnx

from superopt.core.errors import SuperoptError
from superopt.core.ir import Graph, Node, Value
from superopt.core.onnx_io import load, save, to_onnx
from superopt.core.types import TensorType
from superopt.core.version import __version__

if TYPE_CHECKING:
    from superopt.core.rules import Rule, RuleSet
    from superopt.pipeline.optimize import OptimizeResult, PipelineProgress
    from superopt.pipeline.shapes import ShapeHints

__all__ = ["Graph", "Node", "TensorType", "Value", "SuperoptError", "load", "save", "to_onnx",
           "optimize", "register_custom_op_library", "__version__"]

# The defaults of `superopt.pipeline.optimize.optimize`, repeated here so that `import superopt`
# stays light; tests/test_honest_output.py checks that the two signatures are identical.
DEFAULT_BUDGET = 300
DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_CHECK_N = 3


def optimize(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None = None,
             *, rules: RuleSet | Sequence[Rule] | str | os.PathLike | None = None,
             device: str = "auto", cost: str = "measured", alpha: float = 1.05,
             budget: int = DEFAULT_BUDGET, time_limit: float = DEFAULT_TIME_LIMIT_S,
             input_shapes: Mapping[str | None, Sequence[int]] | None = None,
             shape_hints: ShapeHints | None = None,
             skip_rules: Iterable[str] = (), check: bool = True, check_n: int = DEFAULT_CHECK_N,
             rtol: float | None = None, atol: float | None = None,
             save_as_external_data: bool | None = None,
             progress: PipelineProgress | None = None, include_unproved: bool = False,
             gate: bool = True, gate_budget_s: float = 6.0, cost_model: Any = None,
             write: bool = True, roofline_candidate: bool = True) -> OptimizeResult:
    """Optimize an ONNX model with proved rewrites; write it only if it is faster end to end
    and numerically equal to the original.

    Args:
        model: the model, as a path or an `onnx.ModelProto`.
        output: where to write; None writes `IN.opt.onnx` beside a model given as a path, and
            nothing for a ModelProto.
        rules: a rules file, a `RuleSet` or a list of `Rule`s (default: the shipped database);
            only proved rules are used, and proofs not from the intact shipped database are
            re-proved first (cached).
        device: "cpu", "cuda" or "auto" (CUDA where it works).
        cost: the cost model, "measured" (ONNX Runtime timings, cached on disk) or "analytic".
        alpha: search relaxation: graphs costing less than alpha x the best are explored.
        budget: graphs the search expands at most.
        time_limit: search seconds at most (the best graph so far is used).
        input_shapes: fixed input shapes, `{"input": (1, 3, 224, 224)}` (key None for a model
            with one input); the written model then takes only those shapes.
        shape_hints: the sizes to cost and time symbolic dims at, which otherwise stay
            symbolic (`{"input_ids": (8, 256)}`, or `{"seq": 256}` by symbol; default: batch-like
            dims 1, others 128).
        skip_rules: rule ids, id prefixes or names not to use.
        check: compare the result with the original on random valid inputs before writing.
        check_n: input sets the check draws.
        rtol, atol: the check's tolerances for every output (None: by output element type,
            float32 1e-4/1e-5): each value must satisfy |result - original| <= atol + rtol *
            |original|.
        save_as_external_data: weights in `OUT.onnx.data` (None: only past 2 GB).
        progress: `progress(phase, done, total, detail)`, called as the phases advance.
        include_unproved: use rules without a proof too (testing only).
        gate: time the original and the candidates end to end and write a candidate only if it
            is faster beyond the noise; False writes the cost model's cheapest (still checked).
        gate_budget_s: seconds for the end-to-end gate (docs/gate.md).
        cost_model: a ready `superopt.core.costing.CostModel`, overriding `cost`.
        write: False writes nothing (the result still says what would have been written).

    Returns:
        An `OptimizeResult`: `verdict` ("written: faster", "original kept: not faster beyond
        the noise", ...), `original_kept`, `kept_reason`, `speedup`, op counts and sizes before
        and after, the rewrites (`steps`) and the check; `to_json()` is the report document
        (docs/report-schema.md).

    Raises:
        SuperoptError: one line for bad input (exit status 2 on the command line), or
            `CheckError` when the check failed or could not compare (nothing written).

    The signature is that of `superopt.pipeline.optimize.optimize`, which does the work (it is
    imported on the first call).
    """
    from superopt.pipeline.optimize import optimize as _optimize

    return _optimize(
        model, output, rules=rules, device=device, cost=cost, alpha=alpha, budget=budget,
        time_limit=time_limit, input_shapes=input_shapes, shape_hints=shape_hints,
        skip_rules=skip_rules, check=check,
        check_n=check_n, rtol=rtol, atol=atol, save_as_external_data=save_as_external_data,
        progress=progress, include_unproved=include_unproved, gate=gate,
        gate_budget_s=gate_budget_s, cost_model=cost_model, write=write,
        roofline_candidate=roofline_candidate)


def register_custom_op_library(path: str | os.PathLike) -> str:
    """Register a custom op library (a shared object for ONNX Runtime's
    `SessionOptions.register_custom_ops_library`) for every ONNX Runtime session superopt
    creates in this process: timings, the gate, the check. What `--custom-lib` does.

    Returns the absolute path; raises `SuperoptError` (one line) for a missing or unloadable
    file. Imports ONNX Runtime.
    """
    from superopt.runtime import register_custom_op_library as _register

    return _register(path)
