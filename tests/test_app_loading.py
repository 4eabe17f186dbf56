"""load_app: every app spec form Gunicorn accepts, and every way loading can fail."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
from polycorn.server.app import AppImportError, load_app, parse_spec
from polycorn.server.exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR

APP_SOURCE = '''
def application(environ, start_response):
    start_response("200 OK", [])
    return [b"application"]

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"app"]

class Holder:
    def wsgi(self, environ, start_response):
        start_response("200 OK", [])
        return [b"nested"]

holder = Holder()

def create_app(greeting="hi", *, suffix=""):
    def made(environ, start_response):
        start_response("200 OK", [])
        return [(greeting + suffix).encode()]
    return made

def returns_none():
    return None

def broken_factory():
    raise ValueError("factory exploded")

def type_error_inside():
    return len(5)

not_callable = 42
'''


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """Write a module with a unique name on a temporary sys.path entry; forget it after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(source: str = APP_SOURCE, package: bool = False) -> str:
        name = f"app_{uuid.uuid4().hex[:10]}"
        if package:
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text("")
            (tmp_path / name / "wsgi.py").write_text(textwrap.dedent(source))
        else:
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def body(app) -> bytes:
    return b"".join(app({}, lambda status, headers: None))


# -- every form

def test_module_alone_means_its_application(make_module):
    assert body(load_app(make_module())) == b"application"


def test_module_and_name(make_module):
    assert body(load_app(f"{make_module()}:app")) == b"app"


def test_dotted_module_path(make_module):
    name = make_module(package=True)
    assert body(load_app(f"{name}.wsgi")) == b"application"
    assert body(load_app(f"{name}.wsgi:app")) == b"app"


def test_attribute_of_an_object(make_module):
    assert body(load_app(f"{make_module()}:holder.wsgi")) == b"nested"


def test_factory_without_arguments(make_module):
    assert body(load_app(f"{make_module()}:create_app()")) == b"hi"


def test_factory_with_literal_arguments(make_module):
    name = make_module()
    assert body(load_app(f"{name}:create_app('hello', suffix='!')")) == b"hello!"
    assert body(load_app(f'{name}:create_app(greeting="x")')) == b"x"


def test_spaces_around_the_spec_are_ignored(make_module):
    assert body(load_app(f"  {make_module()}:app ")) == b"app"


def test_parse_spec_parts():
    assert parse_spec("pkg.mod") == ("pkg.mod", ["application"], None)
    assert parse_spec("pkg.mod:a.b") == ("pkg.mod", ["a", "b"], None)
    assert parse_spec("m:f(1, 'x', k=[1, 2])") == ("m", ["f"], ([1, "x"], {"k": [1, 2]}))


def test_the_example_apps_load(monkeypatch):
    from support.procs import EXAMPLES

    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert callable(load_app("flask_app:app"))
    assert callable(load_app("flask_app:create_app('named')"))
    assert callable(load_app("django_app.wsgi"))
    assert callable(load_app("hello"))


# -- every failure: one line, a typed error, the traceback kept when there is one, and
# Gunicorn's exit status: 3 (WORKER_BOOT_ERROR) when the module or a factory raised,
# 4 (APP_LOAD_ERROR) when the module gave no application

def expect_error(spec: str, *fragments: str, status: int = APP_LOAD_ERROR) -> AppImportError:
    with pytest.raises(AppImportError) as info:
        load_app(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.exit_status == status
    return info.value


def test_module_not_found():
    name = f"no_such_module_{uuid.uuid4().hex[:8]}"
    error = expect_error(name, f"module {name!r} not found", status=WORKER_BOOT_ERROR)
    assert "ModuleNotFoundError" in error.traceback


def test_submodule_not_found(make_module):
    name = make_module(package=True)
    expect_error(f"{name}.missing", f"module '{name}.missing' not found", status=WORKER_BOOT_ERROR)


def test_missing_dependency_is_an_error_inside_the_module_not_a_missing_module(make_module):
    name = make_module("import no_such_dependency_xyz\n")
    error = expect_error(name, f"error while importing {name!r}",
                         "ModuleNotFoundError", "no_such_dependency_xyz", status=WORKER_BOOT_ERROR)
    assert "not found" not in str(error).split(":")[0]


def test_exception_while_importing(make_module):
    name = make_module("raise RuntimeError('import-time boom')\n")
    error = expect_error(name, f"error while importing {name!r}", "RuntimeError: import-time boom",
                         status=WORKER_BOOT_ERROR)
    assert "Traceback" in error.traceback and "import-time boom" in error.traceback


def test_syntax_error_in_module(make_module):
    expect_error(make_module("def broken(:\n"), "SyntaxError", status=WORKER_BOOT_ERROR)


def test_attribute_missing(make_module):
    name = make_module()
    expect_error(f"{name}:nope", f"failed to find attribute 'nope' in {name!r}")


def test_nested_attribute_missing(make_module):
    name = make_module()
    expect_error(f"{name}:holder.nope", f"failed to find attribute 'nope' in '{name}:holder'")


def test_missing_application_hints_at_app(make_module):
    name = make_module("def app(e, s):\n    return []\n")
    expect_error(name, "failed to find attribute 'application'", f"use {name}:app")


def test_not_callable(make_module):
    name = make_module()
    expect_error(f"{name}:not_callable", f"{name}:not_callable is not callable", "int")


def test_factory_called_with_wrong_arguments(make_module):
    expect_error(f"{make_module()}:create_app(1, 2, 3)", "factory 'create_app' called with the "
                 "wrong arguments", "positional")


def test_type_error_inside_a_factory_is_a_factory_failure(make_module):
    error = expect_error(f"{make_module()}:type_error_inside()",
                         "factory 'type_error_inside' failed: TypeError", status=WORKER_BOOT_ERROR)
    assert "len(5)" in error.traceback


def test_factory_raising(make_module):
    expect_error(f"{make_module()}:broken_factory()",
                 "factory 'broken_factory' failed: ValueError: factory exploded",
                 status=WORKER_BOOT_ERROR)


def test_factory_returning_none(make_module):
    expect_error(f"{make_module()}:returns_none()", "factory 'returns_none' returned None")


def test_calling_something_not_callable(make_module):
    expect_error(f"{make_module()}:not_callable()", "factory 'not_callable'", "not callable")


@pytest.mark.parametrize("expression", ["create_app(os.getcwd())", "create_app(x)",
                                        "create_app(*args)", "create_app(**kw)"])
def test_non_literal_arguments_are_refused(make_module, expression):
    expect_error(f"{make_module()}:{expression}", "failed to parse arguments as literal values")


@pytest.mark.parametrize("expression", ["1 + 2", "app[0]", "app(", "lambda: 1", "'app'"])
def test_unparsable_expression(make_module, expression):
    expect_error(f"{make_module()}:{expression}", "failed to parse")


def test_file_name_instead_of_module_gets_a_hint():
    # Gunicorn tries to import these, and its worker fails to boot (3)
    expect_error("myapp.py", "module 'myapp.py' not found", "did you mean 'myapp:application'",
                 status=WORKER_BOOT_ERROR)
    expect_error("myapp.py:app", "did you mean 'myapp:app'", status=WORKER_BOOT_ERROR)
    expect_error("src/myapp.py", "'src/myapp.py' is not a module name",
                 "did you mean 'src.myapp:application'", status=WORKER_BOOT_ERROR)


def test_empty_and_malformed_module_names():
    expect_error(":app", "is not a module name", status=WORKER_BOOT_ERROR)
    expect_error("my-app:app", "is not a module name", status=WORKER_BOOT_ERROR)
