"""Checks before anything changes on any host: bad input stops the command with every
problem listed, and no host has been touched.

Local checks first (hosts known, keys present, wheels present, release id well
formed), then one SSH session per host (reachable, authenticated, its state read
in one round trip), then what the task needs of that state (layout present,
release id unused, a release to roll back to).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

from polycorn.deploy import hostops
from polycorn.deploy.fanout import each
from polycorn.deploy.hostops import HostInfo
from polycorn.deploy.inventory import DeploySettings, HostEntry
from polycorn.deploy.layout import ReleaseIdError, check_release_id
from polycorn.deploy.remote import HostShell, RemoteError

PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".zip")
MIN_PYTHON = (3, 11)


class PreflightError(Exception):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class Target:
    """A host that passed the checks: its entry, its open session, what it has."""

    entry: HostEntry
    shell: HostShell
    info: HostInfo

    @property
    def name(self) -> str:
        return self.entry.name


def key_problems(entries: Sequence[HostEntry]) -> list[str]:
    problems = []
    for entry in entries:
        if entry.key and not os.path.isfile(entry.key):
            problems.append(f"host {entry.name}: ssh key {entry.key} not found")
        elif entry.key and not os.access(entry.key, os.R_OK):
            problems.append(f"host {entry.name}: ssh key {entry.key} is not readable")
    return problems


def resolve_wheels(patterns: Sequence[str], base_dir: str = ".") -> tuple[list[str], list[str]]:
    """The files to upload (each pattern a path or a glob) and the problems found."""
    files: list[str] = []
    problems: list[str] = []
    if not patterns:
        problems.append("no wheels to deploy: pass --wheels or set wheels in the settings")
    for pattern in patterns:
        path = os.path.join(base_dir, os.path.expanduser(pattern))
        found = sorted(glob.glob(path)) if glob.has_magic(path) else \
            ([path] if os.path.exists(path) else [])
        if not found:
            problems.append(f"wheel {pattern} does not exist")
        for file in found:
            if not os.path.isfile(file) or not file.endswith(PACKAGE_SUFFIXES):
                problems.append(f"{file} is not a wheel or an sdist ({', '.join(PACKAGE_SUFFIXES)})")
            elif os.path.basename(file) in {os.path.basename(f) for f in files}:
                problems.append(f"{file}: a package of that file name is listed twice")
            else:
                files.append(os.path.abspath(file))
    return files, problems


def release_id_problems(release_id: str) -> list[str]:
    try:
        check_release_id(release_id)
    except ReleaseIdError as exc:
        return [str(exc)]
    return []


def connect(settings: DeploySettings, entries: Sequence[HostEntry]) -> list[Target]:
    """Open a session to every host and read its state; PreflightError lists the hosts
    that cannot be reached or read (sessions already opened are closed)."""
    def reach(entry: HostEntry) -> Target:
        shell = HostShell(entry, settings.connect_timeout)
        try:
            shell.open()
            return Target(entry, shell, hostops.inspect(shell, settings))
        except Exception:
            shell.close()
            raise

    done = each(entries, reach)
    problems = []
    for d in done:
        if isinstance(d.error, RemoteError) and d.error.step == "inspect":
            problems.append(f"host {d.item.name}: cannot read its state with "
                            f"{settings.python}: {d.error.reason}")
        elif d.error is not None:
            problems.append(f"host {d.item.name}: {getattr(d.error, 'reason', d.error)}")
        elif tuple(int(x) for x in d.result.info.python.split(".")[:2]) < MIN_PYTHON:
            problems.append(f"host {d.item.name}: {settings.python} is Python "
                            f"{d.result.info.python}; polycorn needs 3.11 or later")
    if problems:
        close_all([d.result for d in done if d.result is not None])
        raise PreflightError(problems)
    return [d.result for d in done]


def layout_problems(targets: Sequence[Target], base: str) -> list[str]:
    return [f"host {t.name}: no release layout under {base}: run the setup task first"
            for t in targets if not t.info.layout_ok]


def close_all(targets: Sequence[Target]) -> None:
    for t in targets:
        t.shell.close()
