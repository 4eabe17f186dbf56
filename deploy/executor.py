"""A Fabric executor that runs the deploy's tasks once with the whole host list.

Stock Fabric runs a task once per `-H` host, in turn: a rolling deploy needs all
hosts in one call (one release id, batches, rollback across hosts). Tasks marked
by `fleet_task` are therefore called once with a FleetContext carrying the -H
names; any other task keeps Fabric's per-host behaviour. `fab -r deploy` picks
this class through deploy/fabric.json (tasks.executor_class); `polycorn-deploy`
passes it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fabric import Executor
from invoke import Call, Context, Task

FLEET_ATTR = "runs_on_all_hosts"


class FleetContext(Context):
    """An invoke Context plus the host names given with -H (empty: every host)."""

    hosts: tuple[str, ...] = ()  # a real attribute: invoke would store it in the config


class FleetCall(Call):
    def __init__(self, *args: Any, hosts: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hosts = hosts

    def clone_data(self) -> dict[str, Any]:
        return {**super().clone_data(), "hosts": self.hosts}

    def make_context(self, config: Any) -> FleetContext:
        context = FleetContext(config=config)
        context.hosts = self.hosts
        return context


def is_fleet_task(task: Any) -> bool:
    return bool(getattr(getattr(task, "body", task), FLEET_ATTR, False))


def mark_fleet(body: Callable) -> Callable:
    setattr(body, FLEET_ATTR, True)
    return body


class FleetExecutor(Executor):
    def expand_calls(self, calls: list, apply_hosts: bool = True) -> list:
        host_str = self.core[0].args.hosts.value if apply_hosts else None
        hosts = tuple(h.strip() for h in host_str.split(",") if h.strip()) if host_str else ()
        fleet, plain = [], []
        for call in calls:
            call = Call(task=call) if isinstance(call, Task) else call
            if is_fleet_task(call.task):
                fleet.append(call.clone(into=FleetCall, with_={"hosts": hosts}))
            else:
                plain.append(call)
        return fleet + super().expand_calls(plain, apply_hosts)
