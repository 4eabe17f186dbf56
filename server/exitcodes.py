"""The exit statuses of the `polycorn` command: Gunicorn's numbers, so supervisors,
systemd units and scripts written for Gunicorn read them the same way.

Gunicorn exits 1 for a configuration it cannot use ("Error: ..."), 2 for a command
line argparse cannot parse, 3 when a worker fails to boot (the app module does not
import, a hook raises) and 4 when the app cannot be loaded from the module (a missing
attribute, an object that is not callable); see its arbiter.py.
"""

from __future__ import annotations

OK = 0
ERROR = 1  # an invalid value, combination or config file; bind, pid file, a master failure
USAGE = 2  # the command line is not understood (unknown option, no app), or a likely typo
WORKER_BOOT_ERROR = 3  # the app module failed to import, a hook raised, the health check failed
APP_LOAD_ERROR = 4  # the module imported but gave no app: missing attribute, not callable
