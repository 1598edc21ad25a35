#!/usr/bin/env bash
# The template's whole test suite in one command, on a fresh Debian/Ubuntu machine with
# Python 3.11+:  bash scripts/test.sh [pytest args...]
# Installs redis-server (apt-get, as root or through sudo) when it is missing and REDIS_URL
# is unset, and podman, runc and debootstrap for the compose tier unless COMPOSE_TIER=0;
# creates .venv in the repository, installs the pinned requirements-dev.txt and runs pytest.
# pytest's exit code is passed on, so "no tests collected" (5) fails too.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"

fail() {
    echo "ERROR: $*" >&2
    exit 1
}

# Run apt-get as root, or through passwordless sudo; refuse with one line otherwise.
apt_install() {
    local runner=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            runner=(sudo -n)
        else
            fail "$1 is needed and this user can neither apt-get install it nor sudo: run 'sudo apt-get install -y ${*:2}'"
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || fail "$1 is needed and there is no apt-get here: install ${*:2} yourself"
    echo "Installing ${*:2} with apt-get ..." >&2
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${@:2}" >/dev/null
}

command -v "$python" >/dev/null 2>&1 || fail "$python not found: install Python 3.11 or newer, or set PYTHON=/path/to/python3"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$("$python" -V 2>&1) is too old: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"

# Debian and Ubuntu ship venv/ensurepip separately (python3-venv); baked projects need it too.
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install "Python's venv module" "python${version}-venv"
fi

if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    apt_install "redis-server (for the generated project's tests)" redis-server
fi

# Caddy validates the webhook deployment's Caddyfile (tests/test_shipping.py).
if ! command -v caddy >/dev/null 2>&1; then
    apt_install "caddy (to validate the generated Caddyfile)" caddy
fi

# The compose tier (tests/test_compose_up.py, tests/test_compose_webhook.py) builds and runs the
# baked project's Dockerfile and compose files (polling, and webhook replicas behind Caddy) under
# podman; COMPOSE_TIER=0 leaves it out (and installs nothing for it).
if [ "${COMPOSE_TIER:-1}" != "0" ]; then
    engine_ok=1
    for tool in podman runc debootstrap iptables; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || engine_ok=0
    done
    [ -x /usr/lib/podman/netavark ] && [ -x /usr/lib/podman/aardvark-dns ] || engine_ok=0
    if [ "$engine_ok" -eq 0 ]; then
        apt_install "A container engine for the compose tier (or set COMPOSE_TIER=0 to leave it out)" \
            podman runc netavark aardvark-dns iptables debootstrap
    fi
fi

venv=.venv
if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# -p no:cacheprovider: no .pytest_cache in the tree. pytest's exit code is ours.
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no tests (exit 5): check the arguments ($*)" >&2
fi
exit "$status"
