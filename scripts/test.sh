#!/bin/sh
# Sets up a fresh machine (scripts/setup.sh) and runs every test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec python3 -m pytest -q -p no:cacheprovider "$@"
