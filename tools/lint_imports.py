"""Check the import contracts of pyproject.toml ([tool.importlinter]) against the package as
it installs.

Why a wrapper: the stage folders (generator/, verifier/, search/, cost_model/, rules_db/) sit at
the top of the repository and install as `superopt.*` through `[tool.setuptools.package-dir]`.
grimp, which import-linter builds its import graph with, walks the `superopt/` folder and would
not see them. So this script lays the installed tree out in a temporary folder (copies of the
.py files, placed as the package-dir mapping says), puts it first on the path and runs
import-linter there. Exit status: import-linter's (0 when every contract is kept).

Usage: python tools/lint_imports.py [--verbose]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (dev extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(pyproject: dict) -> dict[str, Path]:
    """Each installed package name -> the folder in the repository it comes from."""
    mapping = pyproject["tool"]["setuptools"].get("package-dir", {})
    out = {}
    for pkg in pyproject["tool"]["setuptools"]["packages"]:
        # The longest mapped prefix decides (superopt.generator before superopt).
        parts = pkg.split(".")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in mapping:
                out[pkg] = ROOT / mapping[prefix] / Path(*parts[n:])
                break
        else:
            out[pkg] = ROOT / Path(*parts)
    return out


def lay_out(dest: Path, pyproject: dict) -> None:
    for pkg, src in package_dirs(pyproject).items():
        target = dest / Path(*pkg.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, target / f.name)


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    with tempfile.TemporaryDirectory(prefix="superopt-imports-") as tmp:
        lay_out(Path(tmp), pyproject)
        env = dict(os.environ, PYTHONPATH=tmp + os.pathsep + os.environ.get("PYTHONPATH", ""))
        lint = Path(sys.executable).with_name("lint-imports")
        cmd = [str(lint), str(ROOT / "pyproject.toml"), "--no-cache", *argv]
        return subprocess.run(cmd, cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
