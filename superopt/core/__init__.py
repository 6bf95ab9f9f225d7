"""The core: the IR and its types, the op registry and op definitions, patterns, rules, the
ONNX boundary, errors and atomic writes, and the cost interface the search is written against.

The core imports no stage (generator, verifier, search, cost_model), no pipeline and no face;
`make lint` checks this with import-linter (see `.importlinter`).
"""
