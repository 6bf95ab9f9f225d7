"""The wheel installs into a fresh venv outside the checkout and optimizes a zoo model there
(benchmarks/wheel_check.sh; needs the package registry or pip's cache). Slow: `make test-all`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "wheel_check.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wheel_installs_and_optimizes_outside_the_checkout():
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1200)
    tail = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, tail
    assert "wheel-check: OK" in r.stdout, tail
    assert "imported" in r.stdout and "site-packages" in r.stdout, tail
