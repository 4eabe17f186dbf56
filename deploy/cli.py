"""`polycorn-deploy`: the deploy tasks as one command, without a fabfile.

The same tasks and options as `fab -r deploy`, with Fabric's own command line
(-H hosts, -i key, --list, --help TASK) and the fleet executor built in.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabric import Config
from fabric.main import Fab
from invoke import Collection
from polycorn.deploy import tasks
from polycorn.deploy.executor import FleetExecutor

from polycorn import __version__


def make_program() -> Fab:
    return Fab(name="polycorn-deploy", binary="polycorn-deploy", version=__version__,
               namespace=Collection.from_module(tasks), executor_class=FleetExecutor,
               config_class=Config)


def main(argv: Sequence[str] | None = None) -> None:
    make_program().run(None if argv is None else ["polycorn-deploy", *argv])


if __name__ == "__main__":
    main()
