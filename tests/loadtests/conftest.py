"""Fixtures for the load-test tests: `loadtests` importable, and a run directory per test.

`loadtests/` is a folder of the project, not an installed package: the project root
goes on sys.path (python -m pytest adds the working directory, plain pytest does not).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
