#!/bin/sh
# Install everything the tests need on a fresh Debian machine (as root), then run the whole test suite.
# Idempotent: skips what is already present. Used by the README and by .ci/run.
set -eu
cd "$(dirname "$0")/.."

need_apt=""
command -v opentracker >/dev/null 2>&1 || need_apt="$need_apt opentracker"
command -v openssl >/dev/null 2>&1 || need_apt="$need_apt openssl"  # the bundle test runs the printed openssl command
command -v chromium >/dev/null 2>&1 || need_apt="$need_apt chromium"  # the web app's browser tests
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt="$need_apt postgresql"
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need_apt >/dev/null
    else
        echo "missing Debian packages:$need_apt (run this script as root, or: sudo apt-get install$need_apt)" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    PYTHON=.venv/bin/python
fi
"$PYTHON" -m pip install -q --upgrade pip >/dev/null
"$PYTHON" -m pip install -q -e '.[test,postgres,pdq]'

"$PYTHON" -m ruff check p2pwatch evidence tests scripts
"$PYTHON" -m mypy
exec "$PYTHON" -m pytest -q "$@"
