#!/bin/sh
# Sets up this machine (scripts/setup.sh), then runs a producer and a collector
# from .venv on local folders (config/demo/*.yaml), appends lines to watched
# files and shows the aggregate.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
VIRTUAL_ENV="$(pwd)/.venv"
PATH="$VIRTUAL_ENV/bin:$PATH"
export VIRTUAL_ENV PATH
rm -rf demo
mkdir -p demo/logs
zaggd collector -c config/demo/collector.yaml 2>demo/collector.log &
COLLECTOR=$!
zaggd producer -c config/demo/producer.yaml 2>demo/producer.log &
PRODUCER=$!
trap 'kill -TERM $PRODUCER $COLLECTOR 2>/dev/null; wait $PRODUCER $COLLECTOR 2>/dev/null || true' EXIT
# Both answer on their control sockets once ready (at most 30 s).
for _ in $(seq 60); do
    zaggd status -c config/demo/producer.yaml >/dev/null 2>&1 &&
        zaggd status -c config/demo/collector.yaml >/dev/null 2>&1 && break
    sleep 0.5
done
for i in 1 2 3 4 5; do
    echo "$(date -u +%FT%TZ) demo app: request $i served" >> demo/logs/app.log
    echo "$(date -u +%FT%TZ) demo web: GET /page/$i 200" >> demo/logs/web.log
done
# All 10 lines written (at most 30 s).
for _ in $(seq 60); do
    [ "$(find demo/out -type f -name '*.log' -exec cat {} + 2>/dev/null | wc -l)" -ge 10 ] && break
    sleep 0.5
done
echo "== aggregate files under demo/out:"
find demo/out -type f -name '*.log' | sort
echo "== their lines:"
find demo/out -type f -name '*.log' | sort | xargs cat
echo "== producer status:"
zaggd status -c config/demo/producer.yaml | head -20
