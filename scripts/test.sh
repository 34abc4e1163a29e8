#!/bin/sh
# Sets up this machine (scripts/setup.sh --test) and runs every test, from .venv.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh --test
VIRTUAL_ENV="$(pwd)/.venv"
PATH="$VIRTUAL_ENV/bin:$PATH"
export VIRTUAL_ENV PATH
exec python -m pytest -q -p no:cacheprovider "$@"
