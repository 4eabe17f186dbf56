"""Every polycorn, polycorn-ctl and polycorn-deploy command line of README.md, run.

The README's code blocks are read as one reader's shell session, top to bottom:
`export NAME=value` and `export NAME=$(command)` set the environment of the lines
after; a line that runs polycorn, polycorn-ctl or polycorn-deploy runs here
through the installed console script, with its placeholders filled in (FILLS,
below); another tool's line is skipped, unless the walk-through needs what it
does (OTHER_TOOLS: `systemctl reload haproxy` starts HAProxy on the config the
README wrote). A README edit is checked the day it is made: a new command that
fails, or that this file cannot fill in, fails this test, which then says what
to add here.

Every command runs in a private mount namespace whose /run is a directory of the
test, so the defaults under /run (HAProxy's runtime API socket) are real paths
that no other test and nothing on the machine shares.

How each kind of command is run, and why some are not run to the end:
- one-shot commands (polycorn-ctl status, polycorn --check-config, ...) must exit 0;
  a cluster read that finds nothing yet (exit 1: nodes still registering) is
  retried for a while, as a reader would look again;
- `polycorn` that serves runs until it answers HTTP 200 on every address it binds,
  and serves on until the session ends (later sections build on the cluster);
- followers (`polycorn-ctl events --follow`, `polycorn-ctl haproxy sync`) run until
  they have printed a line and are still running, and run on (they never end);
- `polycorn-deploy TASK ...` needs SSH hosts: Fabric's parser checks the task and
  every option named (`polycorn-deploy --help TASK`); tests/deploy runs the tasks
  against real sshd hosts;
- `polycorn...` in inline code spans of the prose are parsed, not run, by the
  real parsers (polycorn's configuration loader, polycorn-ctl's argparse, Fabric).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.http import get
from support.procs import ROOT, Polycorn, alive, free_port, kill_all, wait_until

README = ROOT / "README.md"
OURS = ("polycorn", "polycorn-ctl", "polycorn-deploy")
BIN = Path(sys.executable).parent
ONE_SHOT_FLAGS = {"--check-config", "--print-config", "--upgrade", "-v", "--version", "-h",
                  "--help"}
# (subcommand words) that never end by themselves.
FOLLOWERS = (("events", "--follow"), ("events", "-f"), ("haproxy", "sync"), ("dashboard",))
CLUSTER_READ_RETRY = 30.0  # seconds a cluster read may find nothing yet (exit 1)
SERVE_TIMEOUT = 40.0


# -- reading the README --------------------------------------------------------------------


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced block, continuation lines (trailing \\) joined."""
    blocks, current, inside = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if inside:
                blocks.append(_join_continuations(current))
                current = []
            inside = not inside
        elif inside:
            current.append(line)
    return blocks


def _join_continuations(lines: list[str]) -> list[str]:
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append((pending + line).strip())
            pending = ""
    return [line for line in out if line]


def inline_commands(text: str) -> list[str]:
    """`polycorn ARGS` spans of the prose (outside code blocks)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", prose)
    # A bare name (`polycorn-ctl`) names the tool; it is no command line.
    return [s for s in spans if s.split()[0] in OURS and len(s.split()) > 1]


def words(line: str) -> list[str]:
    """The shell words of a line, its comment dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


# -- filling placeholders ------------------------------------------------------------------


@dataclass
class Session:
    """What the README's reader has: a shell environment, a project, ports, processes."""

    tmp: Path
    env: dict[str, str]
    project: Path
    ports: dict[str, int] = field(default_factory=dict)
    servers: list[Polycorn] = field(default_factory=list)
    followers: list[subprocess.Popen] = field(default_factory=list)  # and other services
    wrap: list[str] = field(default_factory=list)  # the private /run (see the docstring)
    final_checks: list = field(default_factory=list)  # run once every line has run
    log: list[str] = field(default_factory=list)
    parse_only: bool = False
    private_redis: str = ""

    def fill(self, line: str) -> str:
        """The line with its placeholders replaced (FILLS)."""
        for pattern, make in FILLS:
            line = re.sub(pattern, lambda m, make=make: make(self, m), line)
        return line

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m[1], m[0]), text)

    def loopback(self, literal: str) -> str:
        if literal not in self.ports:
            self.ports[literal] = free_port()
        return f"127.0.0.1:{self.ports[literal]}"

    @property
    def run_dir(self) -> Path:
        """What every command sees as /run."""
        return self.tmp / "run"

    def path(self, absolute: str) -> str:
        """A system path of the README under the test's directory; /run/X is the very
        file the commands see as /run/X, so the test reads it too."""
        rest = absolute.lstrip("/")
        local = (self.run_dir / rest[4:] if rest.startswith("run/")
                 else self.tmp / "root" / rest)
        local.parent.mkdir(parents=True, exist_ok=True)
        return str(local)

    def redis_url(self) -> str:
        """The URL the README's reader got from redis-up, else a private one of ours."""
        if self.parse_only:
            return "redis://127.0.0.1:6379/0"  # never used: the line is only parsed
        if self.env.get("POLYCORN_REDIS"):
            return self.env["POLYCORN_REDIS"]
        if not self.private_redis:  # not exported: the reader's shell has no such variable
            done = self.run_one(["polycorn-ctl", "redis-up"])
            assert done.returncode == 0, done.stderr
            self.private_redis = done.stdout.strip()
        return self.private_redis

    # -- running

    def script(self, name: str) -> list[str]:
        return [*self.wrap, str(BIN / name)]

    def start_service(self, argv: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        """A command that runs on (a follower, HAProxy); stopped when the session ends."""
        out = self.tmp / f"{name}-{len(self.followers)}.out"
        with open(out, "wb") as sink:
            proc = subprocess.Popen([*self.wrap, *argv], cwd=self.project, env=self.env,
                                    stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.followers.append(proc)
        return proc, out

    def run_one(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([*self.script(argv[0]), *argv[1:]], cwd=self.project,
                              env=self.env, capture_output=True, text=True, timeout=timeout)


# (regex, replacement) applied in order to each command line before it is split.
FILLS: list[tuple[str, object]] = [
    # Any Redis URL (redis://127.0.0.1:PORT/0, redis://...): the session's Redis.
    (r"redis://[^\s\"']*", lambda s, m: s.redis_url()),
    # HOST:PORT to listen on or reach: a free loopback port, one per literal (0.0.0.0
    # would listen on every interface; tests use loopback only).
    (r"(?<![\w/.:])(?:0\.0\.0\.0|127\.0\.0\.1|localhost|\[::1?\]):\d{2,5}\b",
     lambda s, m: s.loopback(m[0])),
    # System paths (/run/shop/shop.pid, /srv/...): the same path under the test's dir.
    (r"(?<![\w:.])/(?:run|var|srv|etc|opt)/[\w./-]+", lambda s, m: s.path(m[0])),
    # Words that stand for a value (`polycorn-ctl drain NODE`, `--upgrade PIDFILE`).
    (r"\bNODE\b", lambda s, m: "p1"),
    (r"<task>", lambda s, m: "status"),
    # A synopsis: `polycorn [OPTIONS] MODULE[:CALLABLE]`.
    (r"\[OPTIONS\]\s*", lambda s, m: ""),
    (r"\bMODULE(?:\[:CALLABLE\]|:CALLABLE)?", lambda s, m: "app:application"),
]


def make_app(project: Path, spec: str) -> None:
    """A module for MODULE[:CALLABLE] (a factory call included) answering 200."""
    module, _, name = spec.partition(":")
    name = name or "application"
    factory = "(" in name
    name = name.split("(")[0]
    parts = module.split(".")
    for i in range(1, len(parts)):
        package = project.joinpath(*parts[:i])
        package.mkdir(exist_ok=True)
        (package / "__init__.py").touch()
    body = textwrap.dedent('''
        def _app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\\n"]
    ''')
    body += (f"\n\ndef {name}(*args, **kwargs):\n    return _app\n" if factory
             else f"\n\n{name} = _app\n")
    project.joinpath(*parts[:-1], parts[-1] + ".py").write_text(body)


def polycorn_config(session: Session, args: list[str]):
    from polycorn.server.config.loader import load_config
    from polycorn.server.plugins import discover
    return load_config(args, session.env, plugins=discover())


# -- the kinds of command ------------------------------------------------------------------


def is_follower(argv: list[str]) -> bool:
    return argv[0] == "polycorn-ctl" and any(
        all(w in argv[1:] for w in pattern) for pattern in FOLLOWERS)


def serves(argv: list[str]) -> bool:
    return argv[0] == "polycorn" and not ONE_SHOT_FLAGS & set(argv[1:])


def start_server(session: Session, argv: list[str]) -> None:
    cfg = polycorn_config(session, argv[1:])
    assert cfg.app_spec, f"no app in {argv}"
    make_app(session.project, cfg.app_spec)
    env = dict(session.env)
    if "-b" not in argv and "--bind" not in argv:
        # The default (127.0.0.1:8000) may be taken on a shared machine: give it a free
        # port through polycorn's own environment variable, leaving the line as written.
        env["POLYCORN_CMD_ARGS"] = f"-b {session.loopback('default')}"
        cfg = polycorn_config(session, ["-b", session.loopback("default"), *argv[1:]])
    server = Polycorn(argv[1:], cwd=session.project, env=env, command=session.script("polycorn"),
                      log_path=session.tmp / f"server-{len(session.servers)}.log")
    session.servers.append(server)

    def answers() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"{shlex.join(argv)} exited {server.proc.returncode}:\n"
                                 f"{server.log()}")
        return all(_answers(address) for address in cfg.bind)
    wait_until(answers, SERVE_TIMEOUT, what=f"{shlex.join(argv)} to serve\n{server.log()}")


def _answers(address: str) -> bool:
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(address[5:])
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        host, _, port = address.rpartition(":")
        return get(int(port), "/", host=host.strip("[]"), timeout=2)[0] == 200
    except OSError:
        return False


def start_follower(session: Session, argv: list[str]) -> None:
    proc, out = session.start_service([str(BIN / argv[0]), *argv[1:]], "follower")

    def printed() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{shlex.join(argv)} exited {proc.returncode}:\n"
                                 f"{out.read_text()}")
        return bool(out.read_text().strip())
    wait_until(printed, 20, what=f"{shlex.join(argv)} to print a line")
    time.sleep(1.0)
    assert proc.poll() is None, f"{shlex.join(argv)} stopped:\n{out.read_text()}"
    assert "polycorn-ctl: " not in out.read_text(), out.read_text()  # our error prefix


def run_one_shot(session: Session, argv: list[str]) -> str:
    if argv[0] == "polycorn-deploy":
        return check_deploy_line(session, argv)
    deadline = time.monotonic() + CLUSTER_READ_RETRY
    while True:
        done = session.run_one(argv)
        # 1 is "nothing to show yet" for polycorn-ctl (nodes still registering).
        if done.returncode != 1 or argv[0] != "polycorn-ctl" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done.returncode == 0, (f"{shlex.join(argv)} exited {done.returncode}:\n"
                                  f"{done.stdout}{done.stderr}")
    return done.stdout


def check_deploy_line(session: Session, argv: list[str]) -> str:
    """SSH hosts are needed to run a task: Fabric checks the task and its options."""
    task = next((w for w in argv[1:] if not w.startswith("-")), None)
    assert task, f"no task in {argv}"
    done = session.run_one(["polycorn-deploy", "--help", task])
    assert done.returncode == 0, f"{task}: {done.stdout}{done.stderr}"
    for flag in (w.split("=")[0] for w in argv[argv.index(task) + 1:] if w.startswith("--")):
        assert flag in done.stdout, f"polycorn-deploy {task} has no {flag}:\n{done.stdout}"
    return ""


def run_line(session: Session, line: str) -> None:
    """One line of a block: an export, one of our commands, or another tool's line."""
    export = re.match(r"^export\s+(\w+)=(.*)$", line)
    if export:
        name, value = export[1], export[2].split(" #")[0].strip()
        command = re.fullmatch(r"\"?\$\((.*)\)\"?", value)
        if command:
            argv = words(session.fill(command[1]))
            assert argv[0] in OURS, f"export from another tool: {line}"
            value = run_one_shot(session, argv).strip()
        else:
            value = session.expand(" ".join(words(value)))
        session.env[name] = value
        session.log.append(f"export {name}={value}")
        return
    first = words(line)[0] if words(line) else ""
    if first not in OURS:
        for pattern, action in OTHER_TOOLS:
            if re.fullmatch(pattern, " ".join(words(line))):
                session.log.append(f"other tool, done here: {line}")
                action(session)
                return
        session.log.append(f"skipped (not a polycorn command): {line}")
        return
    argv = [session.expand(w) for w in words(session.fill(line))]
    argv, redirect = split_redirect(argv)
    session.log.append(f"run: {shlex.join(argv)}" + (f" {redirect[0]} {redirect[1]}"
                                                      if redirect else ""))
    if serves(argv):
        start_server(session, argv)
    elif is_follower(argv):
        start_follower(session, argv)
    else:
        out = run_one_shot(session, argv)
        if redirect:  # `polycorn-ctl ... > FILE`: what a reader's shell would write
            mode, path = redirect
            with open(path, "a" if mode == ">>" else "w") as f:
                f.write(out)


def split_redirect(argv: list[str]) -> tuple[list[str], tuple[str, str] | None]:
    """A trailing `> FILE` or `>> FILE` (the only shell syntax our lines use)."""
    for i, word in enumerate(argv):
        for mode in (">>", ">"):
            if word.startswith(mode):
                target = word[len(mode):] or (argv[i + 1] if i + 1 < len(argv) else "")
                assert target, f"redirect without a file in {argv}"
                return argv[:i], (mode, target)
    return argv, None


def start_haproxy(session: Session) -> None:
    """`systemctl reload haproxy` after the README wrote /etc/haproxy/haproxy.cfg: what
    Debian's unit runs (haproxy on that file), here in the foreground (-db)."""
    config = Path(session.path("/etc/haproxy/haproxy.cfg"))
    assert config.exists(), "the README reloads HAProxy before writing its config"
    (session.run_dir / "haproxy").mkdir(parents=True, exist_ok=True)  # the package's
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    proc, out = session.start_service([haproxy, "-db", "-f", str(config)], "haproxy")

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"haproxy exited {proc.returncode}:\n{out.read_text()}")
        return any(p.is_socket() for p in (session.run_dir / "haproxy").iterdir())
    wait_until(listening, 15, what=f"haproxy's runtime API socket\n{out.read_text()}")
    binds = re.findall(r"^\s*bind\s+(127\.0\.0\.1:\d+)", config.read_text(), flags=re.M)
    assert binds, f"no loopback bind in {config}"

    def routes() -> None:
        """At the end of the walk-through (the sync has filled the backend): HAProxy
        passes a request to a node."""
        wait_until(lambda: _answers(binds[0]), 20,
                   what=f"a request through HAProxy at {binds[0]}\n{out.read_text()[-2000:]}")
    session.final_checks.append(routes)


# Lines of other tools that the walk-through needs done: (the line, as words, regex; action).
OTHER_TOOLS: list[tuple[str, object]] = [
    (r"systemctl (?:reload|restart|start) haproxy(?:\.service)?", start_haproxy),
]


def end_session(session: Session) -> None:
    for proc in session.followers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    for server in session.servers:
        server.stop()
    session.followers.clear()
    session.servers.clear()


@pytest.fixture
def session(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLYCORN_", "GUNICORN_", "XDG_")) and k not in ("PORT",)}
    env["HOME"] = str(tmp_path / "home")  # redis-up's state goes under this home
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    s = Session(tmp_path, env, project)
    yield s
    end_session(s)
    state = tmp_path / "home" / ".local" / "state" / "polycorn" / "redis"
    if (state / "redis.pid").exists():
        s.run_one(["polycorn-ctl", "redis-down"])
        with contextlib.suppress(ValueError, OSError):
            pid = int((state / "redis.pid").read_text())
            if alive(pid):
                kill_all([pid])


# Not marked slow (about 15 s): `make test` must check a README edit the day it is made.
def test_every_readme_command_line_works(session):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the private /run of the walk-through needs root and unshare")
    session.run_dir.mkdir()
    session.wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    'mount --bind "$0" /run && exec "$@"', str(session.run_dir)]
    blocks = code_blocks(README.read_text())
    ran = 0
    for block in blocks:
        for line in block:
            try:
                run_line(session, line)
            except AssertionError as exc:
                raise AssertionError(
                    f"README line failed: {line}\n{exc}\n\nIf the line is right, teach "
                    f"tests/test_readme_commands.py its placeholder (FILLS) or its kind "
                    f"(FOLLOWERS, ONE_SHOT_FLAGS).\nSession so far:\n" + "\n".join(session.log)
                ) from None
            ran += line.split()[0] in OURS or line.startswith("export")
    for check in session.final_checks:
        check()
    print("\n".join(session.log))
    assert ran >= 5, session.log  # the README shows at least its cluster walk-through


# What a parser says when a span names a command without its argument: `polycorn
# --upgrade`, `polycorn-ctl drain` in a sentence are mentions, not lines to type.
MENTION = re.compile(r"expected one argument|the following arguments are required")


def test_every_inline_command_parses(session, capsys):
    """`polycorn ...` in the prose: each one parses with the real parser (an unknown
    option or subcommand fails; a mention without its argument is fine)."""
    from polycorn.ha.ctl.cli import build_parser
    from polycorn.server.config.errors import ConfigError

    session.parse_only = True
    spans = inline_commands(README.read_text())
    assert len(spans) >= 5, spans
    for span in spans:
        argv = words(session.fill(span))
        if argv[0] == "polycorn":
            try:
                polycorn_config(session, argv[1:])
            except ConfigError as exc:
                assert MENTION.search(str(exc)), f"`{span}`: {exc}"
            except SystemExit as exc:  # --help, --version
                assert exc.code in (0, None), span
        elif argv[0] == "polycorn-ctl":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                said = capsys.readouterr().err
                assert exc.code in (0, None) or MENTION.search(said), f"`{span}`: {said}"
        else:
            check_deploy_line(session, argv)
