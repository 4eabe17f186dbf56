"""The Fabric tasks: `fab -r deploy <task> [-H host1,host2]` or `polycorn-deploy <task>`.

Options come from the task's signature (shown by `fab -r deploy --help <task>`)
over the settings file (deploy.toml, or --config-file, or $POLYCORN_DEPLOY_CONFIG).
Without -H a task works on every host of the settings. Exit status: 0 done,
1 a host failed or a rollout was halted and rolled back, 2 bad input (nothing
was changed on any host).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from fabric import Connection
from invoke import Exit, task
from polycorn.deploy import actions
from polycorn.deploy.batches import BatchError, parse_percent
from polycorn.deploy.executor import FleetContext, mark_fleet
from polycorn.deploy.inventory import SettingsError, config_path, load_settings
from polycorn.deploy.layout import ReleaseIdError
from polycorn.deploy.preflight import PreflightError
from polycorn.deploy.progress import Progress

EXIT_USAGE = 2
CONFIG_HELP = "settings file (default: $POLYCORN_DEPLOY_CONFIG or ./deploy.toml)"
ROLLING_HELP = {
    "serial": "hosts per batch: a count, a percentage (30%) or a progression (1,50%)",
    "max-fail-percent": "a batch fails when more than this share of its hosts fails "
                        "(default 0: any failure)",
}


def _hosts(c: Any) -> tuple[str, ...]:
    if isinstance(c, FleetContext):
        return c.hosts
    if isinstance(c, Connection):  # stock executor: it would run us once per host
        raise Exit("polycorn-deploy: error: these tasks roll over all hosts in one call: run "
                   "them with `fab -r deploy` (deploy/fabric.json selects "
                   "polycorn.deploy.executor.FleetExecutor) or with polycorn-deploy",
                   code=EXIT_USAGE)
    return ()


def _run(c: Any, action: Callable[..., int], config_file: str, **options: Any) -> None:
    """Load the settings with the task's options, run the action, exit with its status."""
    try:
        settings = load_settings(config_path(config_file or None)).with_options(**options)
        status = action(settings, _hosts(c))
    except (SettingsError, PreflightError, ReleaseIdError, BatchError) as exc:
        for line in str(exc).splitlines():
            print(f"polycorn-deploy: error: {line}", file=sys.stderr, flush=True)
        print("polycorn-deploy: nothing was changed on any host", file=sys.stderr, flush=True)
        raise Exit(code=EXIT_USAGE) from None
    if status != 0:
        raise Exit(code=status)


def _percent(text: str) -> float | None:
    return parse_percent(text, "max-fail-percent") if text != "" else None


@task(help={"config-file": CONFIG_HELP})
@mark_fleet
def setup(c, config_file=""):
    """Create the release layout on each host; install systemd units where systemd runs."""
    _run(c, lambda s, hosts: actions.setup(s, hosts, Progress()), config_file)


@task(help={"wheels": "comma-separated wheels/sdists (paths or globs) of the app, polycorn "
                      "and their dependencies (default: wheels in the settings)",
            "release": "release id (default: the UTC time, YYYYMMDDHHMMSS)",
            "config-file": CONFIG_HELP, **ROLLING_HELP})
@mark_fleet
def deploy(c, wheels="", release="", serial="", max_fail_percent="", config_file=""):
    """Install a new release on every host, then switch them in health-gated batches."""
    try:
        percent = _percent(max_fail_percent)
    except BatchError as exc:
        raise Exit(f"polycorn-deploy: error: {exc}", code=EXIT_USAGE) from None
    files = [w.strip() for w in wheels.split(",") if w.strip()]
    _run(c, lambda s, hosts: actions.deploy(s, hosts, Progress(), wheels=files,
                                            release_id=release or None),
         config_file, serial=serial, max_fail_percent=percent)


@task(help={"to": "release id to go back to (default: each host's previous release)",
            "config-file": CONFIG_HELP, **ROLLING_HELP})
@mark_fleet
def rollback(c, to="", serial="", max_fail_percent="", config_file=""):
    """Switch each host back to its previous release, rolling and health-gated."""
    try:
        percent = _percent(max_fail_percent)
    except BatchError as exc:
        raise Exit(f"polycorn-deploy: error: {exc}", code=EXIT_USAGE) from None
    _run(c, lambda s, hosts: actions.rollback(s, hosts, Progress(), to=to or None),
         config_file, serial=serial, max_fail_percent=percent)


@task(help={"json": "print JSON", "config-file": CONFIG_HELP})
@mark_fleet
def status(c, json=False, config_file=""):
    """What each host runs, and the cluster registry's view."""
    _run(c, lambda s, hosts: actions.status(s, hosts, as_json=json), config_file)


@task(help={"keep": "releases to keep per host (default: keep_releases in the settings)",
            "config-file": CONFIG_HELP})
@mark_fleet
def cleanup(c, keep=0, config_file=""):
    """Remove old releases: keep the newest N, never the current one or one in use."""
    _run(c, lambda s, hosts: actions.cleanup(s, hosts, Progress()), config_file,
         keep_releases=keep or None)
