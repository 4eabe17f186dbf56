"""The optional compiled accelerator (server/_accel.c); everything else is in pyproject.toml.

The extension is optional twice over: setuptools skips it when it cannot be built
(no compiler, no Python headers), and POLYCORN_NO_EXTENSIONS=1 skips building it
at all. Polycorn then runs its pure-Python path (server/accel.py says which).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("POLYCORN_NO_EXTENSIONS", "") in ("", "0"):
    ext_modules.append(Extension(
        "polycorn.server._accel", ["server/_accel.c", "server/accel_respond.c",
                                   "server/accel_take.c", "server/accel_environ.c",
                                   "server/accel_slots.c", "server/accel_serve.c"],
        depends=["server/accel.h"], optional=True,
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers"]))

setup(ext_modules=ext_modules)
