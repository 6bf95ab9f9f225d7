"""superopt: a tensor-graph superoptimizer for ONNX models, in the line of TASO.

Public API:
    >>> import superopt
    >>> g = superopt.load("model.onnx")           # doctest: +SKIP
    >>> superopt.save(g, "copy.onnx")              # doctest: +SKIP

`import superopt` never imports z3: only the verifier needs it.
"""

from superopt.core.errors import SuperoptError
from superopt.core.ir import Graph, Node, Value
from superopt.core.onnx_io import load, save, to_onnx
from superopt.core.types import TensorType
from superopt.core.version import __version__

__all__ = ["Graph", "Node", "TensorType", "Value", "SuperoptError", "load", "save", "to_onnx",
           "optimize", "__version__"]


def optimize(*args, **kwargs):
    """Optimize a model; see `superopt.pipeline.optimize.optimize` (imported lazily)."""
    from superopt.pipeline.optimize import optimize as _optimize

    return _optimize(*args, **kwargs)
