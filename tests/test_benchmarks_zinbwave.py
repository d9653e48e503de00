"""The ZINB-WaVE benchmark without its R peer: it says so, names the build script and exits 0
without timing anything or printing a ratio (no JAX is imported on that path)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "zinbwave_speed.py"


def test_zinbwave_benchmark_without_r_says_how_to_build_it(tmp_path):
    missing = tmp_path / "no-such-Rscript"
    out = subprocess.run([sys.executable, str(SCRIPT), "--rscript", str(missing)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "R peer missing" in out.stdout and "build_r_zinbwave.sh" in out.stdout
    assert not re.search(r"\d\s*x\b|targets|R s", out.stdout), out.stdout
