#!/usr/bin/env bash
# Build local stand-ins for the official images the generated Dockerfile and compose files
# name (python:<version>-slim, redis:7-alpine, caddy:2), for the compose test tier ONLY: no
# registry is reachable where the tests run, so nothing can be pulled. All are one Debian
# bookworm minbase root file system from the Debian mirror apt already uses, imported into
# podman under the exact names the shipped files use, so they run unchanged. They are NOT the
# official images (Python is Debian's 3.11 whatever tag they carry, Redis Debian's 7.0, Caddy
# Debian's 2.6): the official images are the one thing this tier cannot prove.
#   bash tests/container_images/build.sh PYTHON_VERSION [PYTHON_VERSION...]
# Builds only the tags podman does not have yet (podman's storage persists between runs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
[ "$#" -ge 1 ] || { echo "usage: $0 PYTHON_VERSION [PYTHON_VERSION...]" >&2; exit 2; }

# A stand-in built from an older recipe (this script or the entrypoint changed) is rebuilt.
recipe="$(cat "$here/build.sh" "$here/redis-entrypoint.sh" | sha256sum | cut -c1-16)"
current() {
    [ "$(podman image inspect --format '{{index .Labels "compose-tier.recipe"}}' \
        "docker.io/library/$1" 2>/dev/null)" = "$recipe" ]
}
missing=()
for version in "$@"; do
    current "python:${version}-slim" || missing+=("python:${version}-slim")
done
current redis:7-alpine || missing+=("redis:7-alpine")
current caddy:2 || missing+=("caddy:2")
[ "${#missing[@]}" -eq 0 ] && exit 0

[ "$(id -u)" -eq 0 ] || { echo "ERROR: building the stand-in images ${missing[*]} needs root (debootstrap, chroot): run the tests as root, or set COMPOSE_TIER=0" >&2; exit 1; }

mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
[ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
[ -n "$mirror" ] || mirror="http://deb.debian.org/debian"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "Building stand-in images ${missing[*]} from $mirror (debootstrap, a few minutes once) ..." >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,redis-server,redis-tools,caddy \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; echo "ERROR: debootstrap of the stand-in images failed" >&2; exit 1; }

# The official python image has python, python3, pip on PATH in /usr/local/bin.
ln -s /usr/bin/python3 "$rootfs/usr/local/bin/python"
ln -s /usr/bin/python3 "$rootfs/usr/local/bin/python3"
# The official redis image keeps its data in /data and starts through docker-entrypoint.sh.
mkdir -p "$rootfs/data"
chroot "$rootfs" chown redis:redis /data
install -m 0755 "$here/redis-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
# pip in the image build must trust what pip on this host trusts (a TLS-inspecting proxy's CA
# may be in the host's bundle), so the stand-in carries the host's CA bundle.
mkdir -p "$rootfs/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -cf "$work/rootfs.tar" .

for name in "${missing[@]}"; do
    label="LABEL compose-tier.recipe=$recipe"
    case "$name" in
        python:*)
            podman import --change "$label" --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
                --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
                --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
                "$work/rootfs.tar" "docker.io/library/$name" >/dev/null ;;
        redis:*)
            podman import --change "$label" --change 'WORKDIR /data' --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
                --change 'CMD ["redis-server"]' --change 'EXPOSE 6379' \
                "$work/rootfs.tar" "docker.io/library/$name" >/dev/null ;;
        caddy:*)
            # As the official image: config and certificates under /config and /data.
            podman import --change "$label" --change 'ENV XDG_CONFIG_HOME=/config' \
                --change 'ENV XDG_DATA_HOME=/data' --change 'WORKDIR /srv' \
                --change 'EXPOSE 80' --change 'EXPOSE 443' --change 'EXPOSE 2019' \
                --change 'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]' \
                "$work/rootfs.tar" "docker.io/library/$name" >/dev/null ;;
    esac
    echo "Built stand-in image $name" >&2
done
