"""Packaging facts users rely on: one import root, and no z3 outside the verifier."""

from __future__ import annotations

import subprocess
import sys


def test_stage_packages_install_under_the_superopt_root():
    import superopt.cost_model
    import superopt.generator
    import superopt.rules_db
    import superopt.search
    import superopt.verifier

    for module in (superopt.generator, superopt.verifier, superopt.search, superopt.cost_model,
                   superopt.rules_db):
        assert module.__name__.startswith("superopt.")


def test_optimizing_and_the_cli_do_not_import_z3():
    code = (
        "import sys\n"
        "import superopt, superopt.pipeline.optimize, superopt.search\n"
        "import superopt.cost_model.measured\n"
        "from superopt.face.cli import build_parser\n"
        "build_parser()\n"
        "assert 'z3' not in sys.modules, 'z3 was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
