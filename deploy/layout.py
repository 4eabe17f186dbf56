"""Where things live on a host (Capistrano's layout) and what a release id may be.

    <base>/releases/<id>/     code: its own virtualenv (venv/), uploaded wheels,
                              polycorn.conf.py and release.json; log, run and config
                              link to shared/
    <base>/shared/            config/, log/, run/ (pid files, hand-off socket)
    <base>/current            symlink to releases/<id>, switched by rename(2)
    <base>/revisions.log      one line per deploy and rollback

The service always runs through `current` (interpreter, config file, working
directory), so a USR2 re-exec after the switch comes up in the new release.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
LINKED_DIRS = ("config", "log", "run")


class ReleaseIdError(ValueError):
    pass


def check_release_id(release: str) -> str:
    if not RELEASE_ID.match(release) or release in ("current", "shared"):
        raise ReleaseIdError(f"release id {release!r}: want letters, digits, '.', '_' or '-' "
                             "(at most 100, starting with a letter or digit)")
    return release


def new_release_id(now: float | None = None) -> str:
    """Capistrano's timestamp id (UTC), computed once per deploy for every host."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now is None else now))


@dataclass(frozen=True)
class Layout:
    base: str
    service: str

    @property
    def releases(self) -> str:
        return f"{self.base}/releases"

    @property
    def shared(self) -> str:
        return f"{self.base}/shared"

    @property
    def current(self) -> str:
        return f"{self.base}/current"

    @property
    def revisions_log(self) -> str:
        return f"{self.base}/revisions.log"

    @property
    def run_dir(self) -> str:
        return f"{self.shared}/run"

    @property
    def log_dir(self) -> str:
        return f"{self.shared}/log"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    def wheels(self, release_id: str) -> str:
        return f"{self.release(release_id)}/wheels"

    def venv(self, release_id: str) -> str:
        return f"{self.release(release_id)}/venv"

    def conf_file(self, release_dir: str) -> str:
        return f"{release_dir}/polycorn.conf.py"

    @property
    def current_python(self) -> str:
        # Taken as given by the master: a re-exec runs the interpreter *through* current.
        return f"{self.current}/venv/bin/python"

    def pidfile(self, master: int | None = None) -> str:
        """One pid file per service (--daemon / --masters), or per systemd instance."""
        suffix = "" if master is None else f"-{master}"
        return f"{self.run_dir}/{self.service}{suffix}.pid"

    @property
    def handoff(self) -> str:
        return f"{self.run_dir}/{self.service}.handoff.sock"

    @property
    def error_log(self) -> str:
        return f"{self.log_dir}/{self.service}.log"
