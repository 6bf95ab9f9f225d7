"""The architecture as checked facts: the import contracts of pyproject.toml hold (layers, no
cycles), and no module reaches into another package's private names.

`make lint` runs the same contracts; this test makes CI (which runs `make test`) check them too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (dev extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from lint_imports import package_dirs  # noqa: E402


def _installed_modules() -> dict[str, Path]:
    """Every installed module name -> its source file, following the package-dir mapping."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = {}
    for pkg, folder in package_dirs(pyproject).items():
        for f in folder.glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def test_import_contracts_are_kept():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "lint_imports.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def test_the_contract_checker_sees_the_stage_packages():
    # The stages live in top-level folders; a checker that missed them would pass vacuously.
    modules = _installed_modules()
    for name in ("superopt.search.backtrack", "superopt.verifier.prove",
                 "superopt.generator.enumeration", "superopt.cost_model.measured",
                 "superopt.core.rules", "superopt.pipeline.optimize", "superopt.face.cli"):
        assert name in modules, name


def _package(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def test_no_private_name_is_imported_from_another_package():
    modules = _installed_modules()
    offences = []
    for name, path in modules.items():
        here = _package(name, path.stem == "__init__")
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if not node.module.startswith("superopt"):
                continue
            source = modules.get(node.module)
            there = _package(node.module, source is not None and source.stem == "__init__")
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and there != here:
                    offences.append(f"{name}: from {node.module} import {alias.name}")
            # `_private` modules (e.g. superopt.zoo._builder) belong to their own package too.
            last = node.module.rpartition(".")[2]
            if last.startswith("_") and not last.startswith("__") and there != here \
                    and not here.startswith(there):
                offences.append(f"{name}: imports the private module {node.module}")
    assert not offences, "\n".join(offences)
