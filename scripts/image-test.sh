#!/usr/bin/env bash
# Build the Docker image without an image registry and check that it works: bootstrap a minimal
# Debian with debootstrap (from this host's Debian mirror), import it as a base image, build the
# Dockerfile FROM it, run it as a user would, and check /healthz, the container's own health check
# and one tool call through the gateway.
#
# Needs: docker (a running daemon), debootstrap, root (for debootstrap). Not part of `make test`.
# Environment:
#   DEBIAN_SUITE   the Debian release to bootstrap (default bookworm: Python 3.11)
#   DEBIAN_MIRROR  where to bootstrap it from (default: the first Debian mirror in this host's APT sources)
#   IMAGE          the tag to build (default interlock:image-test)
#   CACHE_DIR      where the bootstrapped base is kept between runs
#                  (default ${XDG_CACHE_HOME:-$HOME/.cache}/interlock-image-test)
# Every container runs with --network host, so all traffic stays on this machine's loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${DEBIAN_SUITE:-bookworm}
IMAGE=${IMAGE:-interlock:image-test}
BASE=interlock-base:$SUITE
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/interlock-image-test}
PY=${PY:-.venv/bin/python}
say() { printf '== %s\n' "$*"; }
die() { printf 'image-test: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (start one: dockerd &)"

host_mirror() {
    # deb822 sources (URIs:) first, then one-line sources (deb URL suite ...).
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' \
            | grep -v security | head -n1 || true)
    fi
    printf '%s' "$uri"
}

bootstrap_base() {
    command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian: apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    local mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"
    local root="$CACHE_DIR/rootfs-$SUITE"
    mkdir -p "$CACHE_DIR"
    if [ ! -x "$root/usr/bin/python3" ]; then
        say "bootstrapping Debian $SUITE into $root"
        rm -rf "$root"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$root" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 \
            || die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
    fi
    # The base trusts what this host trusts: a build behind a TLS-inspecting proxy then reaches
    # PyPI as the host does. pip uses its own CA list unless PIP_CERT names the system one.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    say "importing it as $BASE"
    tar -C "$root" -c . | docker import \
        --change 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
}

docker image inspect "$BASE" >/dev/null 2>&1 || bootstrap_base

say "building $IMAGE FROM $BASE"
docker build --network host --build-arg "BASE=$BASE" -t "$IMAGE" . >"$CACHE_DIR/build.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/build.log"; die "docker build failed; see $CACHE_DIR/build.log"; }

# The shipped servers.toml with another port (the host's network is shared, and this also shows
# the health check following the configured port): mounted over the image's own.
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
CID=""
cleanup() {
    if [ -n "$CID" ]; then docker rm -f "$CID" >/dev/null 2>&1 || true; fi
    docker volume rm -f "interlock-image-test-$PORT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
sed "s/^port = 8080$/port = $PORT/" servers.toml >"$WORK/servers.toml"
grep -q "^port = $PORT$" "$WORK/servers.toml" || die "could not set the port in a copy of servers.toml"
chmod a+r "$WORK/servers.toml"

say "running it on 127.0.0.1:$PORT (state in the volume interlock-image-test-$PORT)"
CID=$(docker run -d --network host --health-interval 1s --health-start-period 30s \
    -v "$WORK/servers.toml:/app/servers.toml:ro" -v "interlock-image-test-$PORT:/data" \
    "$IMAGE" interlock serve --config servers.toml)

health=""
for _ in $(seq 1 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$CID" 2>/dev/null || echo gone)
    [ "$health" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$CID" 2>/dev/null)" = true ] || break
    sleep 1
done
docker logs "$CID" 2>&1 | sed 's/^/   | /'
[ "$health" = healthy ] || die "the container is not healthy (status: $health)"
say "docker health check: $health"

say "GET /healthz and /readyz"
"$PY" - "$PORT" <<'EOF'
import json, sys, urllib.request
port = sys.argv[1]
for path in ("healthz", "readyz"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as resp:
        print(f"   {path}: {resp.status} {json.loads(resp.read())}")
EOF

say "one tool call through the gateway"
"$PY" - "$PORT" <<'EOF'
import sys
import anyio
from mcp import Client

async def main() -> None:
    with anyio.fail_after(30):
        async with Client(f"http://127.0.0.1:{sys.argv[1]}/mcp") as client:
            names = sorted(tool.name for tool in (await client.list_tools()).tools)
            print(f"   {len(names)} tools: {', '.join(names)}")
            result = await client.call_tool("crm__get_customer", {"customer_id": "C000123"})
            assert not result.is_error, result
            print(f"   crm__get_customer -> {result.content[0].text[:120]}")

anyio.run(main)
EOF

state=$(docker exec "$CID" ls -l /data)
printf '   /data: %s\n' "$(printf '%s' "$state" | tr '\n' ' ')"
printf '%s' "$state" | grep -q interlock-state.db || die "no state file in /data"
say "image-test passed"
