#!/usr/bin/env bash
# A Docker engine of the project's own, for `make test-docker` and CI (see the README, "Docker").
#
#   bash docker/engine.sh start   install the engine + Compose from Debian if missing, start dockerd
#                                 on its own socket and data root, build the local base image once
#                                 and the runtime image; prints the DOCKER_HOST to use
#   bash docker/engine.sh stop    stop that dockerd (and its containers); nothing is left running
#   bash docker/engine.sh host    print the DOCKER_HOST of that dockerd
#
# The daemon runs with host networking only (--bridge=none --iptables=false): containers use
# `network_mode: host` (docker/compose.ci.yml) and bind 127.0.0.1. No image registry is needed:
# the base image is a Debian minbase made by debootstrap from the mirror apt already uses.
#
# Settings (environment):
#   SEQSTORE_DOCKER_RUN        socket, pid file, log, exec root   (default /run/seqstore-docker)
#   SEQSTORE_DOCKER_ROOT       images, containers, volumes        (default ~/.cache/seqstore/docker)
#   SEQSTORE_BASE_IMAGE        the local base image's name        (default seqstore/debian:bookworm)
#   SEQSTORE_DEBIAN_MIRROR     where debootstrap fetches from     (default: apt's own Debian mirror)
#   SEQSTORE_EXTRA_CA_DIR      extra CA certificates (*.crt) the image must trust, e.g. a
#                              TLS-intercepting proxy's     (default /usr/local/share/ca-certificates)
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${SEQSTORE_DOCKER_RUN:-/run/seqstore-docker}
DATA_ROOT=${SEQSTORE_DOCKER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/seqstore/docker}
BASE_IMAGE=${SEQSTORE_BASE_IMAGE:-seqstore/debian:bookworm}
EXTRA_CA_DIR=${SEQSTORE_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
SOCKET="unix://$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
LOG="$RUN_DIR/dockerd.log"
COMPOSE_FILES=(-f docker/compose.yml -f docker/compose.ci.yml)

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { printf 'docker-engine: error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "dockerd runs as root: run this as root (e.g. \`sudo make docker-engine\`), or point DOCKER_HOST at an engine you already run and use \`pytest --hbase=docker\` directly"
}

compose() { docker compose "$@"; }

# Compose v2 (what users run; v1 cannot drop the published ports under host networking): Debian
# ships it from trixie on, as a static CLI plugin. Pinned by version and checksum.
COMPOSE_DEB=pool/main/d/docker-compose/docker-compose_2.26.1-4_amd64.deb
COMPOSE_SHA256=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

install_engine() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them: install Docker Engine, Compose v2 and debootstrap yourself"
        say "installing ${missing[*]} from Debian"
        apt-get update -q >/dev/null || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    docker compose version >/dev/null 2>&1 && return
    local deb url
    deb=$(mktemp "${TMPDIR:-/tmp}/docker-compose.XXXXXX.deb")
    url="$(debian_mirror)/$COMPOSE_DEB"
    say "installing Compose v2 from $url"
    curl -fsS --max-time 300 -o "$deb" "$url" || die "could not download $url"
    echo "$COMPOSE_SHA256  $deb" | sha256sum -c --quiet - || die "checksum mismatch for $url"
    local unpacked
    unpacked=$(mktemp -d "${TMPDIR:-/tmp}/docker-compose.XXXXXX")
    dpkg-deb -x "$deb" "$unpacked" || die "could not unpack $deb"
    install -D -m 0755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_PLUGIN"
    rm -rf "$deb" "$unpacked"
    docker compose version >/dev/null 2>&1 || die "\`docker compose\` does not run after installing $COMPOSE_PLUGIN"
}

engine_up() { DOCKER_HOST=$SOCKET docker version >/dev/null 2>&1; }

start_daemon() {
    if engine_up; then
        say "dockerd already running on $SOCKET"
        return
    fi
    mkdir -p "$RUN_DIR" "$DATA_ROOT"
    say "starting dockerd on $SOCKET (data root $DATA_ROOT, log $LOG)"
    # setsid: the daemon outlives this script and make, and is stopped by `engine.sh stop`.
    setsid dockerd --host "$SOCKET" --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
        --pidfile "$PIDFILE" --bridge=none --iptables=false --ip6tables=false \
        >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 60); do
        engine_up && return
        kill -0 $! 2>/dev/null || { tail -20 "$LOG" >&2; die "dockerd exited at start (log above, all of it in $LOG)"; }
        sleep 1
    done
    tail -20 "$LOG" >&2
    die "dockerd did not answer on $SOCKET within 60 s (log above)"
}

debian_mirror() {
    if [ -n "${SEQSTORE_DEBIAN_MIRROR:-}" ]; then echo "$SEQSTORE_DEBIAN_MIRROR"; return; fi
    # The first Debian main-archive URI apt uses (deb822 sources or one-line sources.list).
    local uri
    uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list | grep -v security | grep -oE 'https?://[^ ]+' | head -1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    if DOCKER_HOST=$SOCKET docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE present (reused)"
        return
    fi
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/seqstore-rootfs.XXXXXX")
    # shellcheck disable=SC2064 # expand now: the trap must remove this rootfs
    trap "rm -rf '$rootfs'" EXIT
    say "building base image $BASE_IMAGE: debootstrap --variant=minbase bookworm from $mirror (about 2 minutes)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$RUN_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$RUN_DIR/debootstrap.log" >&2; die "debootstrap failed (log above, all of it in $RUN_DIR/debootstrap.log)"; }
    tar -C "$rootfs" -c . | DOCKER_HOST=$SOCKET docker import - "$BASE_IMAGE" >/dev/null \
        || die "docker import of the debootstrap rootfs failed"
    rm -rf "$rootfs"
    trap - EXIT
}

copy_extra_certs() {
    # The build trusts what the host trusts beyond the public CAs; docker/certs/*.crt is ignored by git.
    rm -f docker/certs/*.crt
    local n=0
    if [ -d "$EXTRA_CA_DIR" ]; then
        while IFS= read -r -d '' crt; do
            cp "$crt" "docker/certs/$(basename "$crt")"
            n=$((n + 1))
        done < <(find "$EXTRA_CA_DIR" -maxdepth 2 -name '*.crt' -print0)
    fi
    say "$n extra CA certificate(s) from $EXTRA_CA_DIR for the build"
}

build_image() {
    copy_extra_certs
    say "building the runtime image (docker/Dockerfile on $BASE_IMAGE)"
    local started=$SECONDS
    DOCKER_HOST=$SOCKET SEQSTORE_BASE_IMAGE=$BASE_IMAGE compose "${COMPOSE_FILES[@]}" build >"$RUN_DIR/build.log" 2>&1 \
        || { tail -30 "$RUN_DIR/build.log" >&2; die "image build failed (log above, all of it in $RUN_DIR/build.log)"; }
    say "runtime image built in $((SECONDS - started)) s"
}

stop_daemon() {
    if [ ! -f "$PIDFILE" ]; then
        say "no dockerd of ours running"
        return
    fi
    local pid
    pid=$(cat "$PIDFILE")
    if engine_up; then
        # Containers first, with their own grace period (HBase flushes on SIGTERM).
        local running
        running=$(DOCKER_HOST=$SOCKET docker ps -q)
        [ -z "$running" ] || DOCKER_HOST=$SOCKET docker stop -t 90 $running >/dev/null
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "dockerd stopped"; return; }
        sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "dockerd did not stop within 60 s: killed"
}

case "${1:-}" in
    start)
        need_root
        install_engine
        start_daemon
        build_base
        build_image
        echo "DOCKER_HOST=$SOCKET"
        ;;
    stop)
        need_root
        stop_daemon
        ;;
    host)
        echo "$SOCKET"
        ;;
    *)
        die "usage: bash docker/engine.sh start|stop|host"
        ;;
esac
