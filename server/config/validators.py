"""Validators for setting values: each converts a command-line string or a config-file
value to the stored value, or raises ValueError with a message about the value.

The loader prefixes the setting's name and the value's source, so a message here
only says what is wrong with the value itself.
"""

from __future__ import annotations

import grp
import inspect
import ipaddress
import os
import pwd
import re
from collections.abc import Callable
from importlib import import_module
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
HEADER_MAP_CHOICES = ("drop", "refuse", "dangerous")
# Gunicorn's spellings of --proxy-protocol and the mode each means.
PROXY_PROTOCOL_MODES = {"off": "off", "false": "off", "0": "off", "none": "off",
                        "auto": "auto", "true": "auto", "1": "auto", "v1": "v1", "v2": "v2"}
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token

# Worker names Polycorn serves, and the Gunicorn spellings that mean the same thing.
WORKER_CLASSES = ("sync", "thread", "event", "asgi")
WORKER_CLASS_ALIASES = {
    "gthread": "thread",
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "thread",
    "egg:gunicorn#sync": "sync",
    "egg:gunicorn#gthread": "thread",
    "gunicorn.workers.gasgi.ASGIWorker": "asgi",
    "egg:gunicorn#asgi": "asgi",
}
# Other servers' ASGI worker classes: served by -k asgi, with a notice at boot (the
# master says which name it took for which), since their own options do not apply.
FOREIGN_ASGI_ALIASES = ("uvicorn.workers.UvicornWorker", "uvicorn.workers.UvicornH11Worker",
                        "uvicorn_worker.UvicornWorker", "uvicorn_worker.UvicornH11Worker")
# Gunicorn workers that need a library Polycorn does not use: say what to pick instead.
FOREIGN_WORKERS = ("gevent", "eventlet", "tornado", "gaiohttp")
ASGI_LIFESPAN_CHOICES = ("auto", "on", "off")
ASGI_LOOP_CHOICES = ("auto", "asyncio", "uvloop")


def _type_name(value: Any) -> str:
    return type(value).__name__


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _as_int(value: Any) -> int:
    # bool is an int subclass: `workers = True` is a mistake, not 1.
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an integer")


def int_at_least(minimum: int) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        number = _as_int(value)
        if number < minimum:
            raise ValueError(f"{value!r} is below the minimum of {minimum}")
        return number

    validate.__name__ = f"int_at_least_{minimum}"
    return validate


non_negative_int = int_at_least(0)
positive_int = int_at_least(1)


def seconds(value: Any) -> int | float:
    """A duration in seconds: a non-negative int or float ("30", "0.5", 2)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of seconds")
    number: int | float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a number of seconds") from None
    else:
        raise ValueError(f"{value!r} is not a number of seconds")
    if not number >= 0 or number == float("inf"):  # also rejects NaN
        raise ValueError(f"{value!r} must be a finite number of seconds >= 0")
    return number


def positive_seconds(value: Any) -> int | float:
    number = seconds(value)
    if number == 0:
        raise ValueError(f"{value!r} must be more than 0 seconds")
    return number


def optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string ({_type_name(value)})")
    return value.strip()


def nonempty_str(value: Any) -> str:
    text = optional_str(value)
    if not text:
        raise ValueError(f"{value!r} must be a non-empty string")
    return text


def str_list(value: Any) -> list[str]:
    """A repeatable option: one string (Gunicorn's legacy file syntax) or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError(f"{value!r} is not a string or a list of strings")
    return [nonempty_str(item) for item in value]


def _comma_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        items = [nonempty_str(item) for item in value]
    else:
        text = optional_str(value)
        items = [part.strip() for part in (text or "").split(",")]
    return [item for item in items if item]


def ip_network_list(value: Any) -> list[str]:
    """Comma-separated IPs or CIDR networks, or "*"; kept as strings, checked strictly
    (192.168.1.1/24 has host bits set and is refused: it is almost always a typo)."""
    items = _comma_list(value)
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network: {exc}") from None
    return items


def proxy_protocol(value: Any) -> str:
    """--proxy-protocol as Gunicorn reads it: off, v1, v2 or auto (also false/0/none and
    true/1; a bool from a config file; None is off)."""
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "auto" if value else "off"
    if not isinstance(value, str):
        raise ValueError(f"expected off, v1, v2 or auto, not a {_type_name(value)}")
    mode = PROXY_PROTOCOL_MODES.get(value.strip().lower())
    if mode is None:
        raise ValueError(f"{value!r} is not one of off, v1, v2, auto")
    return mode


def header_name_list(value: Any) -> list[str]:
    """Comma-separated request header names (or "*"), upper-cased as Gunicorn compares them."""
    items = [item.upper() for item in _comma_list(value)]
    for item in items:
        if item != "*" and not HEADER_NAME.fullmatch(item):
            raise ValueError(f"{item!r} is not a header name")
    return items


def header_map(value: Any) -> str:
    """What to do with a request header whose name holds "_": refuse, drop or dangerous."""
    text = nonempty_str(value).lower()
    if text not in HEADER_MAP_CHOICES:
        raise ValueError(f"{value!r} is not one of {', '.join(HEADER_MAP_CHOICES)}")
    return text


def asgi_lifespan(value: Any) -> str:
    """Gunicorn 27's --asgi-lifespan: auto (if the app answers it), on (required), off."""
    text = nonempty_str(value).lower()
    if text not in ASGI_LIFESPAN_CHOICES:
        raise ValueError(f"{value!r} is not one of {', '.join(ASGI_LIFESPAN_CHOICES)}")
    return text


def asgi_loop(value: Any) -> str:
    """Gunicorn 27's --asgi-loop: auto (uvloop when installed), asyncio or uvloop."""
    text = nonempty_str(value).lower()
    if text not in ASGI_LOOP_CHOICES:
        raise ValueError(f"{value!r} is not one of {', '.join(ASGI_LOOP_CHOICES)}")
    return text


def root_path(value: Any) -> str:
    """The ASGI root_path: "" or a path starting with "/" (without a trailing one)."""
    text = (optional_str(value) or "").rstrip("/")
    if text and not text.startswith("/"):
        raise ValueError(f"{value!r} does not start with '/'")
    return text


def bind_list(value: Any) -> list[str]:
    from polycorn.server.sockets import parse_address  # the one parser of bind syntax

    items = str_list(value)
    for item in items:
        parse_address(item)  # raises ValueError naming the address
    return items


def umask(value: Any) -> int:
    """Gunicorn's spellings: 0o22, 022 (a leading 0 means octal), 18, 0x12."""
    text = value
    if isinstance(value, str) and re.fullmatch(r"\s*0\d+\s*", value):
        text = "0o" + value.strip()[1:]
    try:
        mask = _as_int(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a umask (an octal number such as 0o022)") from None
    if not 0 <= mask <= 0o777:
        raise ValueError(f"{value!r} is not a umask between 0 and 0o777")
    return mask


def _account_id(value: Any, lookup: Callable[[str], int], kind: str) -> int:
    """A numeric id, or a name resolved by lookup (pwd or grp)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        name = value.strip()
        if name.isdigit():
            return int(name)
        try:
            return lookup(name)
        except KeyError:
            raise ValueError(f"no such {kind}: {name!r}") from None
    raise ValueError(f"{value!r} is not a {kind} name or id")


def user_id(value: Any) -> int:
    return _account_id(value, lambda name: pwd.getpwnam(name).pw_uid, "user")


def group_id(value: Any) -> int:
    return _account_id(value, lambda name: grp.getgrnam(name).gr_gid, "group")


def directory(value: Any) -> str:
    """An existing directory, made absolute against the current directory."""
    text = nonempty_str(value)
    path = os.path.abspath(os.path.join(os.getcwd(), text))
    if not os.path.isdir(path):
        raise ValueError(f"can't chdir to {text!r}: no such directory")
    return path


def url_path(value: Any) -> str | None:
    text = optional_str(value)
    if text is None or text == "":
        return None
    if not text.startswith("/") or any(ch.isspace() or ord(ch) < 0x21 for ch in text):
        raise ValueError(f"{value!r} is not a request path (it must start with '/')")
    return text


def log_level(value: Any) -> str:
    level = nonempty_str(value).lower()
    if level == "warn":  # Python's own alias
        level = "warning"
    if level not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not a log level (one of {', '.join(LOG_LEVELS)})")
    return level


def worker_class(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"{value!r} is not a worker name: Polycorn runs its own workers "
            f"({', '.join(WORKER_CLASSES)}), not worker classes"
        )
    name = value.strip()
    if name in FOREIGN_ASGI_ALIASES:
        return name  # kept as given: worker_class_resolved maps it, the boot says so
    name = WORKER_CLASS_ALIASES.get(name, name)
    if name in WORKER_CLASSES:
        return name
    hint = ""
    if any(foreign in name.lower() for foreign in FOREIGN_WORKERS):
        hint = "; for many concurrent connections use -k event (WSGI) or -k asgi (ASGI)"
    raise ValueError(f"unknown worker class {value!r} (use {', '.join(WORKER_CLASSES)}){hint}")


class _AnyAtom(dict):
    """Answers every key with 0, which formats under %s and %d alike."""

    def __missing__(self, key: str) -> int:
        return 0


def access_log_format(value: Any) -> str:
    fmt = nonempty_str(value)
    try:
        fmt % _AnyAtom()
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{value!r} is not a valid log format: {exc}") from None
    return fmt


def env_assignments(value: Any) -> list[str]:
    items = str_list(value)
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE")
    return items


def mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a dict")
    return value


def _resolve_dotted(value: Any) -> Any:
    """A hook may be named by a dotted path, "package.module.function" (as in Gunicorn)."""
    if not isinstance(value, str):
        return value
    module_name, dot, attr = value.strip().rpartition(".")
    if not dot or not module_name:
        raise ValueError(f"{value!r} is not an import path (module.function)")
    try:
        return getattr(import_module(module_name), attr)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {attr!r}") from None


def _accepts(func: Callable, count: int) -> bool:
    """True when func can be called with exactly `count` positional arguments."""
    try:
        inspect.signature(func).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # builtins without a signature: trust the caller
        return True
    return True


def hook(*params: str) -> Callable[[Any], Callable]:
    """A server hook taking exactly these positional parameters (Gunicorn's arity check)."""

    def validate(value: Any) -> Callable:
        func = _resolve_dotted(value)
        if not callable(func):
            raise ValueError(f"{value!r} is not callable")
        if not _accepts(func, len(params)):
            raise ValueError(
                f"{getattr(func, '__qualname__', func)!r} must accept "
                f"{len(params)} argument(s): ({', '.join(params)})"
            )
        return func

    validate.__name__ = f"hook_{len(params)}"
    return validate


def post_request_hook(value: Any) -> Callable:
    """post_request(worker, req, environ, resp); as in Gunicorn, the shorter forms
    (worker, req, environ) and (worker, req) are accepted and adapted."""
    func = _resolve_dotted(value)
    if not callable(func):
        raise ValueError(f"{value!r} is not callable")
    if _accepts(func, 4):
        return func
    if _accepts(func, 3):
        def adapted3(worker, req, environ, resp):
            return func(worker, req, environ)
        adapted3.__wrapped__ = func  # type: ignore[attr-defined]
        return adapted3
    if _accepts(func, 2):
        def adapted2(worker, req, environ, resp):
            return func(worker, req)
        adapted2.__wrapped__ = func  # type: ignore[attr-defined]
        return adapted2
    raise ValueError(
        f"{getattr(func, '__qualname__', func)!r} must accept 4 arguments: "
        "(worker, req, environ, resp)"
    )


# -- statsd (Gunicorn's --statsd-host, --statsd-prefix, --dogstatsd-tags)

STATSD_DEFAULT_PORT = 8125
# Characters that would break a statsd line ("name:value|type|@rate|#tags", one per line).
_STATSD_NAME = re.compile(r"[!-~]*")  # printable ASCII, no space
_STATSD_NAME_FORBIDDEN = set(":|@#")


def statsd_address(value: Any) -> tuple[str, int] | str | None:
    """Gunicorn's statsd address: HOST:PORT, HOST (port 8125), [IPV6]:PORT, tcp://HOST:PORT
    (still UDP, as in Gunicorn), or unix:PATH / unix://PATH for a unix datagram socket.
    A network address is kept as (host, port), a unix one as its path, like Gunicorn.
    Gunicorn's own quirk is kept: "unix:8125" is host "unix", port 8125."""
    text = optional_str(value)
    if text is None:
        return None
    if re.fullmatch(r"unix:\d+", text):
        return "unix", _statsd_port(value, text[5:])
    if text.startswith("unix:"):
        path = text[5:].removeprefix("//")
        if not path:
            raise ValueError(f"{value!r} has an empty unix socket path")
        return path
    if text.startswith("fd://"):
        raise ValueError(f"{value!r}: statsd needs HOST:PORT or unix:PATH, not a file descriptor")
    text = text.removeprefix("tcp://")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not [IPV6]:PORT")
        port = rest[1:] if rest else str(STATSD_DEFAULT_PORT)
    else:
        host, sep, port = text.partition(":")
        if not sep:
            port = str(STATSD_DEFAULT_PORT)
    return (host.lower() or "0.0.0.0"), _statsd_port(value, port)


def _statsd_port(value: Any, port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: {port!r} is not a port number (1-65535); "
                         "use HOST:PORT or unix:PATH")
    return int(port)


def statsd_prefix(value: Any) -> str:
    """Printable ASCII without ':', '|', '@' or '#', which would break the statsd line."""
    text = optional_str(value) or ""
    if not _STATSD_NAME.fullmatch(text) or _STATSD_NAME_FORBIDDEN & set(text):
        raise ValueError(f"{value!r} is not a statsd prefix (printable ASCII, no spaces "
                         "and none of : | @ #)")
    return text


def dogstatsd_tags(value: Any) -> str:
    """Comma-separated dogstatsd tags, e.g. env:prod,service:web: printable ASCII
    without '|' or '#' (they end the line's tag field)."""
    text = optional_str(value) or ""
    if not _STATSD_NAME.fullmatch(text) or set("|#") & set(text):
        raise ValueError(f"{value!r} is not a list of dogstatsd tags (tag:value,..., "
                         "printable ASCII, no spaces and none of | #)")
    return text


# -- TLS (Gunicorn's SSL section)

def cert_reqs(value: Any) -> int:
    """ssl.CERT_NONE (0), CERT_OPTIONAL (1) or CERT_REQUIRED (2), as Gunicorn's --cert-reqs."""
    number = _as_int(value)
    if number not in (0, 1, 2):
        raise ValueError(f"{value!r} is not 0 (no client certificate), 1 (optional) "
                         "or 2 (required)")
    return number
