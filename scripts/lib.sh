# Shared helpers for scripts/demo, scripts/test and scripts/postgres. Sourced, not run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

banner() {
    printf '\n\033[1m==== %s ====\033[0m\n' "$*"
}

info() {
    printf '%s\n' "$*"
}

warn() {
    printf '\033[33mWARNING: %s\033[0m\n' "$*" >&2
}

die() {
    printf '\033[31mERROR: %s\033[0m\n' "$*" >&2
    exit 1
}

is_root() {
    [ "$(id -u)" = 0 ]
}

is_ci() {
    case "${CI:-}" in true | 1 | yes) return 0 ;; *) return 1 ;; esac
}

_apt_updated=""
apt_install() {
    # apt_install PACKAGE... : as root only; apt-get update once per run.
    is_root || return 1
    command -v apt-get >/dev/null || return 1
    if [ -z "$_apt_updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

stop_services() {
    # stop_services NAME... : disable and stop system services a package just
    # started; the tests run their own (nginx on port 80 would be in the way).
    local service
    for service in "$@"; do
        systemctl disable --now "$service" >/dev/null 2>&1 || service "$service" stop >/dev/null 2>&1 || true
    done
}

python_at_least() {
    # python_at_least INTERPRETER MINOR : true if INTERPRETER runs and is Python >= 3.MINOR.
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $2) else 1)" >/dev/null 2>&1
}

find_python312() {
    # Print the first working Python 3.12+ interpreter, or nothing.
    local candidate
    local -a candidates=()
    for candidate in python3.14 python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            candidates+=("$(command -v "$candidate")")
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        local pyenv_root
        pyenv_root="$(pyenv root 2>/dev/null || true)"
        if [ -n "$pyenv_root" ]; then
            for candidate in "$pyenv_root"/versions/3.1[2-9]*/bin/python3; do
                [ -x "$candidate" ] && candidates+=("$candidate")
            done
        fi
    fi
    for candidate in "${candidates[@]}"; do
        # pyenv shims exist for versions that are not selected: run it to be sure.
        if python_at_least "$candidate" 12 && "$candidate" -c "import venv" >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 0
}

_create_venv() {
    # _create_venv DIR PYTHON
    local dir="$1" python="$2"
    info "Creating $dir with $("$python" --version 2>&1) ($python)"
    if "$python" -m venv "$dir" 2>/dev/null; then
        return 0
    fi
    rm -rf "$dir"
    # Debian's python3 ships venv's ensurepip separately (python3-venv).
    if is_root && apt_install python3-venv && "$python" -m venv "$dir"; then
        return 0
    fi
    rm -rf "$dir"
    # Without ensurepip: an empty venv, and pip installed into it by the outer pip.
    if "$python" -m venv --without-pip "$dir" &&
        "$python" -m pip --python "$dir/bin/python" install -q pip; then
        return 0
    fi
    rm -rf "$dir"
    die "Cannot create a virtual environment with $python: install python3-venv (apt-get install python3-venv) and try again."
}

ensure_venv() {
    # ensure_venv DIR PYTHON REQUIREMENTS_FILE [--project]
    # Creates DIR if missing and (re)installs the requirements when they (or the
    # interpreter) changed since the last install; --project also installs this
    # project in editable mode, so `alarms` resolves to the working tree.
    local dir="$1" python="$2" requirements="$3" project="${4:-}"
    local name stamp_file wanted
    if [ -x "$dir/bin/python" ] && ! "$dir/bin/python" -c "" >/dev/null 2>&1; then
        warn "$dir is broken (its interpreter does not run); recreating it."
        rm -rf "$dir"
    fi
    [ -x "$dir/bin/python" ] || _create_venv "$dir" "$python"
    name="$(basename "$requirements")"
    stamp_file="$dir/.installed-$name"
    wanted="$(
        cd "$ROOT" && {
            "$dir/bin/python" --version 2>&1
            echo "$project"
            cat requirements*.txt pyproject.toml
        } | cksum
    )"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$wanted" ]; then
        info "$dir is up to date with $name"
        return 0
    fi
    info "Installing $name into $dir"
    rm -f "$stamp_file"
    "$dir/bin/python" -m pip install -q -r "$ROOT/$name"
    if [ "$project" = "--project" ]; then
        "$dir/bin/python" -m pip install -q --no-deps -e "$ROOT"
    fi
    printf '%s\n' "$wanted" >"$stamp_file"
}

is_postgres_url() {
    case "${1:-}" in postgres://* | postgresql://* | pgsql://* | postgis://*) return 0 ;; *) return 1 ;; esac
}

# ---------------------------------------------------------------------------
# A throwaway PostgreSQL cluster: pg_start sets PG_URL, pg_stop removes it all.
# pg_start also exports what a test needs to restart the cluster itself (the
# fault tests in tests/e2e/test_faults.py): ALARMS_TEST_PG_DATA (its data
# directory), ALARMS_TEST_PG_CTL (pg_ctl), ALARMS_TEST_PG_USER (the OS user it
# runs as) and ALARMS_TEST_PG_LOG (its server log).
# ---------------------------------------------------------------------------
PG_DIR=""
PG_URL=""
PG_BINDIR=""
PG_USER=""

find_pg_bindir() {
    local dir
    # Debian installs each major version under /usr/lib/postgresql/N/bin; take the newest.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

_as_pg_user() {
    if [ "$PG_USER" = "$(id -un)" ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$PG_USER" -- "$@"
    else
        su "$PG_USER" -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

_free_port() {
    "${PYTHON:-python3}" - <<'PY'
import socket

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PY
}

pg_start() {
    # Start a cluster in a temporary directory on a free port of 127.0.0.1, with
    # trust authentication and a database "alarms"; set PG_URL. Returns non-zero
    # (after saying why) when PostgreSQL cannot be had.
    local port try
    PG_BINDIR="$(find_pg_bindir)" || {
        warn "No PostgreSQL server binaries found (initdb, pg_ctl, postgres)."
        return 1
    }
    if is_root; then
        # initdb refuses to run as root: the cluster belongs to an ordinary user.
        if id postgres >/dev/null 2>&1; then
            PG_USER=postgres
        else
            PG_USER=nobody
        fi
    else
        PG_USER="$(id -un)"
    fi
    PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/alarms-pg.XXXXXX")"
    chmod 700 "$PG_DIR"
    is_root && chown "$PG_USER" "$PG_DIR"
    info "Starting a throwaway PostgreSQL ($("$PG_BINDIR/postgres" --version)) in $PG_DIR as $PG_USER"
    if ! _as_pg_user "$PG_BINDIR/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
        --no-locale --no-sync >"$PG_DIR/initdb.log" 2>&1; then
        cat "$PG_DIR/initdb.log" >&2
        warn "initdb failed."
        pg_stop
        return 1
    fi
    for try in 1 2 3; do
        port="$(_free_port)"
        # fsync off: the cluster is thrown away, and the tests run faster without it.
        if _as_pg_user "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null; then
            PG_URL="postgres://postgres@127.0.0.1:$port/alarms"
            if _as_pg_user "$PG_BINDIR/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
                -c "CREATE DATABASE alarms" >/dev/null; then
                info "PostgreSQL is up: $PG_URL"
                export ALARMS_TEST_PG_DATA="$PG_DIR/data"
                export ALARMS_TEST_PG_CTL="$PG_BINDIR/pg_ctl"
                export ALARMS_TEST_PG_USER="$PG_USER"
                export ALARMS_TEST_PG_LOG="$PG_DIR/server.log"
                return 0
            fi
            break
        fi
        warn "PostgreSQL did not start on port $port (try $try)."
    done
    [ -f "$PG_DIR/server.log" ] && tail -n 20 "$PG_DIR/server.log" >&2
    pg_stop
    return 1
}

pg_stop() {
    # Stop and remove the cluster that pg_start made, if any. Safe to call twice.
    [ -n "$PG_DIR" ] || return 0
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
        _as_pg_user "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 20 stop >/dev/null 2>&1 ||
            _as_pg_user "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 ||
            true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=""
    PG_URL=""
    unset ALARMS_TEST_PG_DATA ALARMS_TEST_PG_CTL ALARMS_TEST_PG_USER ALARMS_TEST_PG_LOG
}
