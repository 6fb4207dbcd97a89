#!/usr/bin/env bash
# The same app under daphne, uvicorn and hypercorn, with the same load client, in one run:
# N anonymous streams opened at N/5 per second, held idle for 20 s, then three broadcasts.
#
#   scripts/postgres bash bench/servers.sh CLIENT [N...]
#   SERVERS="daphne uvicorn" WINDOW=60 BENCH_ALARMS='{"HEARTBEAT": 20}' \
#       scripts/postgres bash bench/servers.sh CLIENT 5000
#
# CLIENT: the ssebench load client. N defaults to "5000 10000". SERVERS (default: all
# three) and WINDOW (the idle seconds, default 20: make it at least twice the
# heartbeat when measuring idle CPU) are optional; BENCH_ALARMS reaches the servers. Each server serves
# config.asgi:application (flow_control and direct_streams, as deployed). Results are
# appended as JSON lines to bench/results/servers.jsonl and summed up as a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CLIENT="${1:?the ssebench load client}"
shift
SIZES=("${@:-5000 10000}")
read -r -a SIZES <<<"${SIZES[*]}"
: "${DATABASE_URL:?run under scripts/postgres}"
OUT="$PWD/bench/results/servers.jsonl"
RUN="servers-$(date +%s)"
mkdir -p bench/results
ulimit -n "$(ulimit -Hn)"

export DJANGO_SETTINGS_MODULE=bench.settings DJANGO_DEBUG=0
export DJANGO_SECRET_KEY="bench-only-$(printf 'x%.0s' {1..50})"
.venv/bin/python manage.py migrate -v 0
trigger=".venv/bin/python bench/trigger.py {token}"
app=config.asgi:application
declare -A COMMAND=(
    [daphne]=".venv/bin/python -m daphne -b 127.0.0.1 -p 8301 $app"
    [uvicorn]=".venv/bin/python -m uvicorn --host 127.0.0.1 --port 8301 --lifespan off --no-access-log --log-level warning --backlog 4096 $app"
    [hypercorn]=".venv/bin/python -m hypercorn --bind 127.0.0.1:8301 --workers 0 --backlog 4096 $app"
)
read -r -a SERVER_LIST <<<"${SERVERS:-daphne uvicorn hypercorn}"
for n in "${SIZES[@]}"; do
    for server in "${SERVER_LIST[@]}"; do
        .venv/bin/python "$CLIENT" --label "$server" -n "$n" --window "${WINDOW:-20}" --connect-rate $((n / 5)) \
            --open-timeout 120 --url http://127.0.0.1:8301/alarms/stream/ --server-cwd "$PWD" \
            --server-cmd "${COMMAND[$server]}" \
            --server-env "DATABASE_URL=$DATABASE_URL" --server-env ALARMS_LOG_LEVEL=WARNING \
            --trigger "$trigger" --trigger "$trigger" --trigger "$trigger" --trigger-wait 20 \
            --note "$RUN" --json-out "$OUT"
    done
done
.venv/bin/python bench/table.py "$OUT" --note "$RUN"
