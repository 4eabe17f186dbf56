"""bench.py's pure parts: reading wrk's report, the summary's ratios, the other checkout (no servers)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench import (
    BASELINE,
    SERVERS,
    TLS_BASELINE,
    TLS_SERVERS,
    against,
    cpu_against,
    package_shim,
    parse_args,
    per_cpu_ratios,
    summarize,
)
from loadtests.bench_run import Run, parse_wrk

WRK_OUT = """Running 5s test @ http://127.0.0.1:40000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.00us  201.00us   9.84ms   90.00%
    Req/Sec    81.55k     2.10k   84.12k    80.00%
  Latency Distribution
     50%  590.00us
     75%  650.00us
     90%  720.00us
     99%    1.21ms
  405123 requests in 5.00s, 51.37MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  81024.60
Transfer/sec:     10.27MB
"""


def test_wrk_report_is_read_with_units_and_every_error_kind() -> None:
    stats = parse_wrk(WRK_OUT)
    assert stats == {"rps": 81024.60, "requests": 405123, "p50_ms": 0.59, "p99_ms": 1.21,
                     "errors": 2 + 1 + 3 + 4}


def test_a_clean_run_has_no_errors() -> None:
    clean = "\n".join(line for line in WRK_OUT.splitlines()
                      if "errors" not in line and "Non-2xx" not in line)
    assert parse_wrk(clean)["errors"] == 0


def run(rep: int, server: str, rps: float, private: int | None = 4096) -> Run:
    return Run(rep, server, "hello", "keep-alive", rps, int(rps * 5), 1.0, 2.0, 0, 10.0,
               20480, private, 25600)


def test_ratios_are_taken_within_each_repetition_then_the_median() -> None:
    runs = [run(0, BASELINE, 10_000), run(0, "polycorn-event", 85_000),
            run(1, BASELINE, 8_000), run(1, "polycorn-event", 72_000),
            run(2, BASELINE, 9_000), run(2, "polycorn-event", 70_000, private=None)]
    rows = {r["server"]: r for r in summarize(runs)}
    event = rows["polycorn-event"]
    # 8.5, 9.0 and 7.78 in their repetitions: the median ratio, not a ratio of medians
    assert event["ratio"] == pytest.approx(8.5)
    assert event["rps"] == 72_000
    assert event["worker_private_mib"] == 4.0  # repetitions without a figure are left out
    assert rows[BASELINE]["ratio"] == 1.0


def test_tls_rows_are_compared_with_gunicorn_sync_over_tls() -> None:
    runs = [run(0, BASELINE, 10_000), run(0, TLS_BASELINE, 5_000),
            run(0, "polycorn-event-tls", 20_000), run(0, "polycorn-event", 80_000)]
    rows = {r["server"]: r for r in summarize(runs)}
    assert rows["polycorn-event-tls"]["ratio"] == pytest.approx(4.0)  # 20k / TLS's 5k
    assert rows["polycorn-event"]["ratio"] == pytest.approx(8.0)
    assert rows[TLS_BASELINE]["ratio"] == 1.0


def test_tls_selects_the_tls_rows_only() -> None:
    assert parse_args(["--tls"]).servers == list(TLS_SERVERS)
    assert TLS_BASELINE in TLS_SERVERS and "polycorn-sync-tls" in TLS_SERVERS
    assert all(SERVERS[name].tls for name in TLS_SERVERS)
    assert not set(TLS_SERVERS) & set(parse_args([]).servers)  # opt-in: not in the default run


def test_unknown_names_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--only", "gunicorn-sync,nginx"])
    assert parse_args(["--apps", "hello", "--modes", "close"]).modes == ["close"]


def test_cpu_against_the_other_checkout_is_the_median_of_per_repetition_ratios() -> None:
    def cpu(rep: int, server: str, us: float) -> Run:
        return dataclasses.replace(run(rep, server, 1000), cpu_us_per_request=us)
    runs = [cpu(0, "polycorn-event", 9.0), cpu(0, "polycorn-event@before", 10.0),
            cpu(1, "polycorn-event", 12.0), cpu(1, "polycorn-event@before", 10.0),
            cpu(2, "polycorn-event", 10.0), cpu(2, "polycorn-event@before", 10.0),
            cpu(3, "polycorn-event@before", 10.0)]  # no twin in this repetition: left out
    [row] = cpu_against(runs)
    assert row == {"app": "hello", "mode": "keep-alive", "against": "polycorn-event@before",
                   "repetitions": 3, "cpu_ratio": pytest.approx(1.0)}


def test_the_other_checkout_is_what_its_servers_import(tmp_path: Path) -> None:
    tree = tmp_path / "release"
    (tree / "polycorn").mkdir(parents=True)
    (tree / "polycorn" / "__init__.py").write_text("")
    (tree / "server").mkdir()
    (tree / "server" / "__init__.py").write_text("MARK = 'release'\n")
    (tree / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"polycorn" = "polycorn"\n"polycorn.server" = "server"\n')
    shim = package_shim(tree, tmp_path, "old")
    env = {**os.environ, "PYTHONPATH": str(shim)}
    out = subprocess.run([sys.executable, "-c", "import polycorn.server as s; print(s.MARK)"],
                         env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "release"  # before the editable install's own tree
    twins = against([SERVERS["gunicorn-sync"], SERVERS["polycorn-event"]],
                    f"old={tree}", tmp_path)
    assert [t.name for t in twins] == ["polycorn-event@old"]
    linked = Path(twins[0].pythonpath[0], "polycorn", "server")
    assert linked.resolve() == (tree / "server").resolve()
    with pytest.raises(SystemExit):
        against([SERVERS["polycorn-event"]], f"old={tmp_path / 'nothing'}", tmp_path)


def test_requests_per_cpu_second_and_the_per_cpu_ratios_of_each_repetition() -> None:
    """req/CPU-s is 1e6 / CPU us per request; a pair's ratio is taken per repetition."""
    runs = []
    for rep, (event_us, granian_us) in enumerate([(10.0, 20.0), (12.0, 12.0), (30.0, 45.0)]):
        runs.append(dataclasses.replace(run(rep, "polycorn-event", 1000), cpu_us_per_request=event_us))
        runs.append(dataclasses.replace(run(rep, "granian", 1000), cpu_us_per_request=granian_us))
    rows = {r["server"]: r for r in summarize(runs)}
    assert rows["polycorn-event"]["requests_per_cpu_second"] == pytest.approx(1e6 / 12.0)
    # Per repetition 2.0, 1.0 and 1.5: the median is 1.5 (the medians' ratio would be 1.67).
    assert per_cpu_ratios(runs, "hello", "keep-alive") == [
        ("polycorn-event", "granian", 1.5, 1.0, 2.0)]
    assert per_cpu_ratios(runs, "hello", "close") == []
