#!/bin/sh
# Sets up a fresh machine, then runs a producer and a collector on local folders
# (config/demo/*.yaml), appends lines to a watched file and shows the aggregate.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
rm -rf demo
mkdir -p demo/logs
python3 -m zaggd collector -c config/demo/collector.yaml 2>demo/collector.log &
COLLECTOR=$!
python3 -m zaggd producer -c config/demo/producer.yaml 2>demo/producer.log &
PRODUCER=$!
trap 'kill -TERM $PRODUCER $COLLECTOR 2>/dev/null; wait $PRODUCER $COLLECTOR 2>/dev/null || true' EXIT
sleep 2
for i in 1 2 3 4 5; do
    echo "$(date -u +%FT%TZ) demo app: request $i served" >> demo/logs/app.log
    echo "$(date -u +%FT%TZ) demo web: GET /page/$i 200" >> demo/logs/web.log
done
sleep 2
echo "== aggregate files under demo/out:"
find demo/out -type f | sort
echo "== their lines:"
find demo/out -type f | sort | xargs cat
echo "== producer status:"
python3 -m zaggd status -c config/demo/producer.yaml | head -20
