"""polycorn-ctl: look at a cluster in Redis, ask its leader for work, run a private Redis.

`cli.py` parses the command line and runs the read-only subcommands; `status.py`
builds what `status` shows (pure); `actions.py` records the operator's requests
for the leader; `common.py` holds the exit codes and the one error type. The
`haproxy` verbs live in ha/haproxy/cli.py and are wired from cli.py.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point (`polycorn-ctl` = `polycorn.ha.ctl:main`).

    Imported on call: ha/haproxy/cli.py imports ctl.common, and an eager import of
    cli.py here would import ha/haproxy/cli.py back while it is half-initialised.
    """
    from polycorn.ha.ctl.cli import main as cli_main
    return cli_main(argv)
