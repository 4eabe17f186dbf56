"""The HTTP layer's wire conformance tests, unchanged, against `-k event` and `-k asgi` in each variant.

tests/server/test_wire.py drives a running polycorn with raw sockets for every
worker class; here its event cases run again with the pure parser and with the
asyncio loop (the `fast` extra's pieces replaced), in a subprocess so that the
variant's environment reaches every server it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from event_support import VARIANTS, skip_if_missing
from support.procs import ROOT

# -k asgi in its default variant (compiled, llhttp, uvloop) runs in test_wire.py itself.
CASES = [(variant, "event") for variant in VARIANTS] + [
    (variant, "asgi") for variant in VARIANTS if variant != "compiled"]


@pytest.mark.parametrize("variant,worker", CASES)
def test_wire_conformance_suite_passes_on_the_event_worker(variant: str, worker: str,
                                                           tmp_path) -> None:
    skip_if_missing(variant)
    env = {**os.environ, **VARIANTS[variant]}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/server/test_wire.py", "-k", worker, "-q",
         "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "wire")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
