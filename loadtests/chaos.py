"""Entry point of the chaos runner: `python -m loadtests.chaos` or `python loadtests/chaos.py`.

Both forms run from the project root; the second puts the project root on
sys.path itself. Everything else is in loadtests/runner.py.
"""

import sys
from pathlib import Path

if not __package__:  # run as a file: make `loadtests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.runner import main  # noqa: E402 - after the sys.path fix above

if __name__ == "__main__":
    sys.exit(main())
