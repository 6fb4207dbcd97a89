#!/usr/bin/env bash
# N anonymous streams opened at a rate of N/5 per second, held for 20 s, then three broadcasts:
# this project through the direct path and through Django's, and the closest peer
# (django-eventstream 5.3 with Redis), one after another with the same load client.
#
#   scripts/postgres bash bench/versus_peer.sh CLIENT PEERS_DIR PEER_PYTHON [N]
#
# CLIENT: the ssebench load client; PEERS_DIR: the folder with its run_peer.sh; PEER_PYTHON:
# a Python with the peer's packages (see that folder's README). N defaults to 5000.
# Results are appended as JSON lines to bench/results/versus_peer.jsonl.
# SERVERS="daphne uvicorn" runs the direct path under each (default: daphne); Django's path
# runs under daphne. APPS="direct" leaves Django's path out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLIENT="${1:?the ssebench load client}"
PEERS="${2:?the peers folder}"
PEER_PY="${3:?a python for the peer}"
N="${4:-5000}"
: "${DATABASE_URL:?run under scripts/postgres}"
OUT="$PWD/bench/results/versus_peer.jsonl"
mkdir -p bench/results
ulimit -n "$(ulimit -Hn)"

export DJANGO_SETTINGS_MODULE=bench.settings DJANGO_DEBUG=0
export DJANGO_SECRET_KEY="bench-only-$(printf 'x%.0s' {1..50})"
.venv/bin/python manage.py migrate -v 0
trigger=".venv/bin/python bench/trigger.py {token}"
runs=()
for server in ${SERVERS:-daphne}; do runs+=("$server config.asgi:application ours-direct"); done
[ "${APPS:-direct django}" = direct ] || runs+=("daphne bench.asgi:django ours-django")
for run in "${runs[@]}"; do
    read -r server app label <<<"$run"
    if [ "$server" = uvicorn ]; then
        # As docs/deployment.md runs it.
        cmd=".venv/bin/python -m uvicorn --host 127.0.0.1 --port 8301 --lifespan off"
        cmd="$cmd --no-access-log --log-level warning --backlog 4096 $app"
        label="$label-uvicorn"
    else
        cmd=".venv/bin/python -m daphne -b 127.0.0.1 -p 8301 $app"
    fi
    .venv/bin/python "$CLIENT" --label "$label" -n "$N" --window 20 --connect-rate $((N / 5)) \
        --url http://127.0.0.1:8301/alarms/stream/ --server-cwd "$PWD" \
        --server-cmd "$cmd" \
        --server-env "DATABASE_URL=$DATABASE_URL" --server-env ALARMS_LOG_LEVEL=WARNING \
        --trigger "$trigger" --trigger "$trigger" --trigger "$trigger" --trigger-wait 15 \
        --json-out "$OUT"
done
# The peer reads its own settings.
env -u DJANGO_SETTINGS_MODULE -u DJANGO_SECRET_KEY -u DJANGO_DEBUG OUT="$OUT" WINDOW=20 PY="$PEER_PY" \
    bash "$PEERS/run_peer.sh" eventstream-redis "$N"
