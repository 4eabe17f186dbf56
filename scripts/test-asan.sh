#!/usr/bin/env bash
# The differential tests of the compiled accelerator (tests/wsgi/test_wsgi_accel.py)
# against a build of server/_accel.c with AddressSanitizer and UBSan: an out-of-bounds
# read, a use after free or undefined behaviour fails the run. CPython itself is not
# instrumented, so libasan is preloaded and PYTHONMALLOC=malloc puts every Python
# object in ASan's heap (bytes overreads are then caught). Leak checking is off:
# CPython frees little at exit. Without a C compiler or libasan it says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CC=${CC:-gcc}
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "test-asan: skipped: no C compiler ($CC); scripts/system-deps.sh installs gcc"
  exit 0
fi
libasan=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "test-asan: skipped: $CC has no libasan.so (install libasan or gcc's full package)"
  exit 0
fi
include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
if [ ! -e "$include/Python.h" ]; then
  echo "test-asan: skipped: no Python.h in $include"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
so="$out/_accel$suffix"
"$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined -fPIC -shared -I"$include" server/_accel.c server/accel_*.c -o "$so"
export LD_PRELOAD="$libasan" PYTHONMALLOC=malloc POLYCORN_ACCEL_PATH="$so"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export POLYCORN_ACCEL_EXAMPLES=${POLYCORN_ACCEL_EXAMPLES:-100}
# The run must be of the sanitized build, not a silent skip (a build that fails to load
# is described as the pure path, with its path in the reason).
"$PY" -c 'from polycorn.server import accel; import sys; d = accel.describe(); print("test-asan:", d); sys.exit(not (d.startswith("compiled") and sys.argv[1] in d))' "$so"
# --capture=sys: a sanitizer report goes to the real stderr, not a captured file.
"$PY" -m pytest -q -p no:cacheprovider -p no:xdist --capture=sys tests/wsgi/test_wsgi_accel.py tests/wsgi/test_wsgi_accel_respond.py
