"""The five operations behind the tasks: setup, deploy, rollback, status, cleanup.

Each takes the settings and the host names, checks everything it can before
touching a host (PreflightError lists every problem), works on the hosts, prints
progress and a final table, and returns the command's exit status: 0 done,
1 a host failed or the rollout was halted (the table says which and why).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from polycorn.deploy import hostops
from polycorn.deploy.fanout import each
from polycorn.deploy.inventory import DeploySettings
from polycorn.deploy.layout import Layout, new_release_id
from polycorn.deploy.preflight import (
    PreflightError,
    Target,
    close_all,
    connect,
    key_problems,
    layout_problems,
    release_id_problems,
    resolve_wheels,
)
from polycorn.deploy.progress import Progress, table
from polycorn.deploy.remote import RemoteError, q, tail
from polycorn.deploy.rollout import (
    SUMMARY_HEADERS,
    HostRun,
    Kind,
    Rollout,
    operator_name,
    summary_rows,
)
from polycorn.deploy.service import ServiceMode

EXIT_OK, EXIT_FAILED = 0, 1


def _open(settings: DeploySettings, names: Sequence[str], extra: Sequence[str] = ()
          ) -> list[Target]:
    entries = settings.select(names)
    problems = [*extra, *key_problems(entries)]
    if problems:
        raise PreflightError(problems)
    return connect(settings, entries)


def _check(targets: list[Target], problems: list[str]) -> None:
    if problems:
        close_all(targets)
        raise PreflightError(problems)


# -- setup -------------------------------------------------------------------------------


def setup(settings: DeploySettings, names: Sequence[str], progress: Progress) -> int:
    """Create the layout; install systemd units where systemd runs; start the service
    where a release is current but nothing runs (e.g. after a reboot without systemd)."""
    targets = _open(settings, names)
    layout = Layout(settings.base, settings.service)

    def one(t: Target) -> str:
        service = hostops.service_for(settings, t.info)
        progress.step(t.name, "layout", detail=settings.base)
        hostops.create_layout(t.shell, layout)
        if service.mode is ServiceMode.SYSTEMD:
            progress.step(t.name, "systemd units", detail=", ".join(service.units()))
            hostops.install_units(t.shell, service, t.entry.user, t.entry.stop_timeout)
        if t.info.current and not t.info.live_masters(service):
            progress.step(t.name, "start", detail=f"release {t.info.current}")
            hostops.activate(t.shell, service, t.info, None, t.entry.upgrade_timeout + 60)
            hostops.wait_ready(t.shell, settings, t.entry, service, t.info.current,
                               settings.gate_timeout)
            return f"service started on {t.info.current}"
        if t.info.current:
            return f"service running on {t.info.current}"
        return "ready for a first deploy"

    try:
        done = each(targets, one)
    finally:
        close_all(targets)
    rows = [[d.item.name, d.item.info.hostname,
             hostops.service_for(settings, d.item.info).mode.value,
             "ok" if d.error is None else "FAILED", d.result or _reason(d.error)] for d in done]
    print(table(("HOST", "HOSTNAME", "SERVICE", "RESULT", "DETAIL"), rows), flush=True)
    return EXIT_OK if all(d.error is None for d in done) else EXIT_FAILED


# -- deploy ------------------------------------------------------------------------------


def deploy(settings: DeploySettings, names: Sequence[str], progress: Progress, *,
           wheels: Sequence[str] = (), release_id: str | None = None) -> int:
    """Prepare the release on every host, then switch them in rolling batches."""
    release_id = release_id or new_release_id()  # once, for every host
    if wheels:
        files, problems = resolve_wheels(wheels)
    else:
        files, problems = resolve_wheels(settings.wheels, str(settings.source.parent))
    targets = _open(settings, names, [*problems, *release_id_problems(release_id)])
    problems = layout_problems(targets, settings.base)
    problems += [f"host {t.name}: release {release_id} exists already" for t in targets
                 if release_id in t.info.release_ids()]
    _check(targets, problems)
    layout = Layout(settings.base, settings.service)
    try:
        progress.line(f"release {release_id}: {len(files)} packages to "
                      f"{', '.join(t.name for t in targets)}")
        record = {"id": release_id, "created": time.time(), "by": operator_name(),
                  "packages": [Path(f).name for f in files]}

        def prepare(t: Target) -> None:
            progress.step(t.name, "prepare", detail="upload, virtualenv, install, check")
            hostops.prepare_release(t.shell, settings, t.entry, release_id, files, record)
            progress.step(t.name, "prepared", detail=layout.release(release_id))

        prepared = each(targets, prepare)
        if any(d.error for d in prepared):
            progress.line(f"release {release_id} could not be prepared everywhere: no host "
                          "was switched; removing it")
            each(targets, lambda t: hostops.remove_release(t.shell, layout, release_id))
            rows = [[d.item.name, "-", "ok" if d.error is None else "FAILED",
                     d.item.info.current or "-", "prepare", "-", _reason(d.error)]
                    for d in prepared]
            print(table(SUMMARY_HEADERS, rows), flush=True)
            return EXIT_FAILED
        runs = [HostRun(t, t.info.current, release_id) for t in targets]
        outcome = Rollout(settings, runs, progress, Kind.DEPLOY).run()
        if not outcome.ok:
            _remove_unused(settings, [r.target for r in runs if r.now_on != release_id],
                           release_id, progress)
        _print_outcome(outcome.halted, summary_rows(outcome))
        return EXIT_OK if outcome.ok else EXIT_FAILED
    finally:
        close_all(targets)


def _remove_unused(settings: DeploySettings, targets: list[Target], release_id: str,
                   progress: Progress) -> None:
    """A failed release leaves no directory behind where nothing runs it."""
    layout = Layout(settings.base, settings.service)

    def one(t: Target) -> None:
        info = hostops.inspect(t.shell, settings)
        if info.current != release_id and release_id not in info.in_use:
            hostops.remove_release(t.shell, layout, release_id)
        else:
            progress.step(t.name, f"kept release {release_id}: still in use")

    each(targets, one)


# -- rollback ----------------------------------------------------------------------------


def rollback(settings: DeploySettings, names: Sequence[str], progress: Progress, *,
             to: str | None = None) -> int:
    """Switch each host back to its previous release (or `to`), rolling, health-gated."""
    targets = _open(settings, names, release_id_problems(to) if to else [])
    problems = layout_problems(targets, settings.base)
    runs = []
    for t in targets:
        goal = to or t.info.previous_release()
        if t.info.current is None:
            problems.append(f"host {t.name}: nothing deployed yet")
        elif goal is None:
            problems.append(f"host {t.name}: no release before {t.info.current} to roll back to")
        elif not t.info.complete_release(goal):
            problems.append(f"host {t.name}: release {goal} is not installed there")
        else:
            runs.append(HostRun(t, t.info.current, goal))
    _check(targets, problems)
    try:
        progress.line("rollback: " + ", ".join(f"{r.name} {r.before} -> {r.release}"
                                               for r in runs))
        outcome = Rollout(settings, runs, progress, Kind.ROLLBACK).run()
        _print_outcome(outcome.halted, summary_rows(outcome))
        return EXIT_OK if outcome.ok else EXIT_FAILED
    finally:
        close_all(targets)


# -- status and cleanup ------------------------------------------------------------------


def status(settings: DeploySettings, names: Sequence[str], *, as_json: bool = False) -> int:
    """What each host runs, and the cluster registry's view (read from a host)."""
    targets = _open(settings, names)
    try:
        hosts = {}
        for t in targets:
            service = hostops.service_for(settings, t.info)
            hosts[t.name] = {"hostname": t.info.hostname, "current": t.info.current,
                             "releases": t.info.release_ids(), "in_use": list(t.info.in_use),
                             "masters": t.info.live_masters(service),
                             "service": service.mode.value}
        registry = _registry(settings, targets) if settings.redis else None
    finally:
        close_all(targets)
    if as_json:
        print(json.dumps({"hosts": hosts, "registry": registry}), flush=True)
        return EXIT_OK
    rows = [[name, h["hostname"], h["current"] or "-", ",".join(h["in_use"]) or "-",
             " ".join(map(str, h["masters"])) or "-", h["service"], ",".join(h["releases"])]
            for name, h in hosts.items()]
    print(table(("HOST", "HOSTNAME", "CURRENT", "RUNNING", "MASTERS", "SERVICE", "RELEASES"),
                rows))
    if registry is not None and registry.get("error"):
        print(f"\ncluster registry: {registry['error']}", flush=True)
    elif registry is not None:
        nodes = registry.get("nodes") or []
        print(f"\ncluster {registry.get('cluster')}: leader {registry.get('leader') or 'none'} "
              f"(epoch {registry.get('epoch')}), {sum(n['alive'] for n in nodes)} live nodes")
        print(table(("NODE", "HOST", "STATE", "RELEASE", "WORKERS", "ADDRESS"),
                    [[n["node_id"], n["host"], n["state"], n["release"], str(n["workers"]),
                      n["address"]] for n in nodes]), flush=True)
    return EXIT_OK


def _registry(settings: DeploySettings, targets: list[Target]) -> dict:
    """`polycorn-ctl status --json`, run on the first host that has a release."""
    layout = Layout(settings.base, settings.service)
    for t in targets:
        if not t.info.current:
            continue
        code, out, err = t.shell.run_status(q(
            layout.current_python, "-m", "polycorn.ha.ctl", "status", "--json", "--redis",
            str(settings.redis), "--cluster", settings.cluster or settings.service), timeout=60)
        try:
            return json.loads(out)
        except ValueError:
            return {"error": f"polycorn-ctl on {t.name} (exit {code}): {tail(err or out)}",
                    "nodes": []}
    return {"error": "no host has a release yet", "nodes": []}


def cleanup(settings: DeploySettings, names: Sequence[str], progress: Progress) -> int:
    """Keep the newest keep_releases releases on each host; never current, never one
    a live process runs in."""
    keep = settings.keep_releases
    targets = _open(settings, names)
    layout = Layout(settings.base, settings.service)

    def one(t: Target) -> tuple[list[str], list[str]]:
        ids = t.info.release_ids()
        protected = {t.info.current, *t.info.in_use}
        doomed = [r for r in ids[:max(0, len(ids) - keep)] if r not in protected]
        if doomed:
            progress.step(t.name, "remove", detail=", ".join(doomed))
            t.shell.run("rm -rf " + q(*(layout.release(r) for r in doomed)), "cleanup",
                        timeout=300)
        return [r for r in ids if r not in doomed], doomed

    try:
        done = each(targets, one)
    finally:
        close_all(targets)
    rows = [[d.item.name, "FAILED" if d.error else "ok",
             ",".join(d.result[0]) if d.result else "-",
             ",".join(d.result[1]) if d.result else _reason(d.error)] for d in done]
    print(table(("HOST", "RESULT", "KEPT", "REMOVED"), rows), flush=True)
    return EXIT_OK if all(d.error is None for d in done) else EXIT_FAILED


def _print_outcome(halted: str | None, rows: list[list[str]]) -> None:
    print(table(SUMMARY_HEADERS, rows), flush=True)
    if halted:
        print(f"halted: {halted}", flush=True)


def _reason(error: Exception | None) -> str:
    if error is None:
        return ""
    return str(error) if isinstance(error, RemoteError) else f"{type(error).__name__}: {error}"
