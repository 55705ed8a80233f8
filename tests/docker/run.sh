#!/usr/bin/env bash
# run.sh: builds docker/Dockerfile and checks the image end to end: the container starts as a
# non-root user on a small synthetic model mounted on /models/base, answers /health and /ready,
# a completion, an adapter upload (multipart POST /v1/adapters) and a completion through that
# adapter, /metrics, and its own HEALTHCHECK; then it is removed.
#
# Engine: `docker` when a Docker engine answers, else podman as these machines need it (no
# Docker engine, no image registry):
#   - the base image debian:bookworm-slim is made locally by `debootstrap --variant=minbase
#     bookworm` and `podman import`; its tarball is cached in $LORAMUX_DOCKER_CACHE (default
#     build/docker-cache) and reused, so only the first run pays for debootstrap;
#   - `podman build --isolation=chroot` (no user namespaces needed);
#   - `podman --runtime runc run --network host --ulimit nofile=1024:1024 --ulimit
#     nproc=1024:1024` (crun and the default slirp networking do not work here).
# podman keeps the build's layers, so a rebuild only recompiles when sources changed.
#
# Environment: LORAMUX_BIN (default build/loramux; makes the model and the adapter),
# LORAMUX_FIXTURES (SmolLM's tokenizer), LORAMUX_DOCKER_CACHE, LORAMUX_DEBIAN_MIRROR (for
# debootstrap, default http://deb.debian.org/debian), LORAMUX_DOCKER_TEST=0 to skip.
#
# Exit status: 0 passed; 77 skipped, where no engine can build and run containers here (the
# reason is the last line printed, starting with "SKIP:"); anything else failed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${LORAMUX_BIN:-$ROOT/build/loramux}
FIXTURES=${LORAMUX_FIXTURES:-$ROOT/../shared/fixtures}
CACHE=${LORAMUX_DOCKER_CACHE:-$ROOT/build/docker-cache}
MIRROR=${LORAMUX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=debian:bookworm-slim
IMAGE=localhost/loramux:test
NAME=loramux-test-$$
ADAPTER=docker-lora
START=$SECONDS

ENGINE=""
WORK=""
RUNNING=0

# ---- helpers ----

step() { printf '== %s (%ds)\n' "$*" $((SECONDS - START)); }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    if [ "$RUNNING" = 1 ]; then
        echo "---- container log (last 40 lines) ----" >&2
        "${ENGINE_CMD[@]}" logs "$NAME" 2>&1 | tail -n 40 >&2 || true
    fi
    exit 1
}

cleanup() {
    if [ "$RUNNING" = 1 ]; then
        "${ENGINE_CMD[@]}" rm -f -v "$NAME" >/dev/null 2>&1 || true
    fi
    if [ -n "$WORK" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# http METHOD PATH [curl args...]: one request to the container; sets STATUS, body in $WORK/body.
http() {
    local method=$1 path=$2
    shift 2
    STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 60 -X "$method" "$@" \
        "http://127.0.0.1:$PORT$path") || STATUS=000
}

# expect CODE WHAT: fails unless the last request answered CODE.
expect() {
    if [ "$STATUS" != "$1" ]; then
        fail "$2: HTTP $STATUS, expected $1: $(head -c 500 "$WORK/body")"
    fi
}

# json EXPR: evaluates the Python expression EXPR on the last body, parsed as `b`; prints it.
json() {
    python3 -c 'import json, sys
b = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$WORK/body" "$1"
}

# wait_for PATH CODE SECONDS: polls until PATH answers CODE; fails if the container exits.
wait_for() {
    local deadline=$((SECONDS + $3))
    while :; do
        http GET "$1"
        if [ "$STATUS" = "$2" ]; then
            return 0
        fi
        if [ "$("${ENGINE_CMD[@]}" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" \
            != true ]; then
            fail "the container exited before $1 answered $2"
        fi
        if [ $SECONDS -ge $deadline ]; then
            fail "$1 did not answer $2 within $3 s (last: HTTP $STATUS)"
        fi
        sleep 0.5
    done
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# ---- engine and base image ----

choose_engine() {
    if [ "${LORAMUX_DOCKER_TEST:-1}" = 0 ]; then
        skip "LORAMUX_DOCKER_TEST=0"
    fi
    command -v curl >/dev/null || skip "curl is not installed (make docker-deps installs it)"
    if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
        ENGINE=docker
        ENGINE_CMD=(docker)
    elif command -v podman >/dev/null; then
        ENGINE=podman
        ENGINE_CMD=(podman --runtime runc)
    else
        skip "no Docker engine answers and podman is not installed" \
            "(make docker-deps installs podman, runc and debootstrap)"
    fi
}

# Docker: the base image comes from the registry (or is there already).
docker_base() {
    if ! docker image inspect "$BASE" >/dev/null 2>&1 && ! docker pull -q "$BASE" >/dev/null; then
        skip "the Docker engine has no $BASE and cannot pull it"
    fi
}

# podman: the base image is debootstrap's minbase, imported under the Dockerfile's name.
podman_base() {
    if podman image exists "$BASE"; then
        return 0
    fi
    local tarball=$CACHE/bookworm-minbase.tar rootfs=$CACHE/rootfs
    if [ ! -s "$tarball" ]; then
        [ "$(id -u)" = 0 ] || skip "making the base image with debootstrap needs root"
        command -v debootstrap >/dev/null || skip "debootstrap is not installed (make docker-deps)"
        step "debootstrap --variant=minbase bookworm (once; cached in $CACHE)"
        rm -rf "$rootfs"
        mkdir -p "$CACHE"
        if ! debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1; then
            tail -n 5 "$CACHE/debootstrap.log"
            rm -rf "$rootfs"
            skip "debootstrap failed (network to $MIRROR?); log: $CACHE/debootstrap.log"
        fi
        # Package lists and downloaded .debs are not part of a slim image.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$rootfs"
    fi
    step "podman import $tarball as $BASE"
    # An imported tarball has no image config: give it the PATH and CMD of Docker's image.
    podman import -q \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' "$tarball" "$BASE" >/dev/null ||
        fail "podman import $tarball failed"
    # Whether podman can run a container at all here (privileges, cgroups, runc): if not, this
    # machine cannot run the test, which is not a failure of the project.
    local err
    if ! err=$("${ENGINE_CMD[@]}" run --rm --network host --ulimit nofile=1024:1024 \
        --ulimit nproc=1024:1024 "$BASE" true 2>&1); then
        podman rmi "$BASE" >/dev/null 2>&1 || true
        skip "podman cannot run containers here: ${err//$'\n'/ }"
    fi
}

build_image() {
    step "$ENGINE build -f docker/Dockerfile -t $IMAGE"
    local log=$WORK/build.log
    local args=(build -f "$ROOT/docker/Dockerfile" -t "$IMAGE")
    if [ "$ENGINE" = podman ]; then
        # docker format: OCI image configs have no HEALTHCHECK, podman would drop it.
        args+=(--isolation=chroot --format docker --network host --pull=never)
    fi
    if ! "$ENGINE" "${args[@]}" "$ROOT" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$ENGINE build failed (the whole log: rerun make docker-test)"
    fi
    step "image $IMAGE: $("$ENGINE" image inspect -f '{{.Size}}' "$IMAGE") bytes"
}

# ---- the model, the adapter and the container ----

make_model() {
    [ -x "$BIN" ] || fail "$BIN is not built; run make first"
    local tok=$FIXTURES/smollm-135m-instruct-lora-qv-r16
    [ -f "$tok/tokenizer.json" ] || fail "SmolLM's tokenizer not found in $tok (LORAMUX_FIXTURES)"
    step "synthetic model and adapter"
    "$BIN" synth-model --shape tiny --tokenizer-from "$tok" --out "$WORK/model" >/dev/null
    "$BIN" synth-adapter --base "$WORK/model" --out "$WORK/adapter" --method lora --rank 8 \
        --targets all >/dev/null
    # The container's user (uid 10001) reads the model through the bind mount.
    chmod -R a+rX "$WORK/model"
}

start_container() {
    PORT=$(free_port)
    step "$ENGINE run on port $PORT"
    local args=(run -d --name "$NAME" -v "$WORK/model:/models/base:ro" -e LORAMUX_THREADS=2)
    if [ "$ENGINE" = podman ]; then
        # Host networking: the server listens on the host's loopback, on a port of its own.
        args+=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
            -e LORAMUX_HOST=127.0.0.1 -e "LORAMUX_PORT=$PORT")
    else
        args+=(-p "127.0.0.1:$PORT:8080")
    fi
    "${ENGINE_CMD[@]}" "${args[@]}" "$IMAGE" >/dev/null || fail "$ENGINE run failed"
    RUNNING=1
}

# ---- checks ----

check_api() {
    step "GET /health, /ready"
    wait_for /health 200 60
    wait_for /ready 200 120

    local uid
    uid=$("${ENGINE_CMD[@]}" exec "$NAME" id -u)
    [ "$uid" != 0 ] || fail "the server runs as root"

    step "POST /v1/completions (base)"
    http POST /v1/completions -H 'Content-Type: application/json' \
        -d '{"model": "default", "prompt": "Hello", "max_tokens": 8, "temperature": 0}'
    expect 200 "completion on the base"
    [ "$(json 'b["usage"]["completion_tokens"]')" -gt 0 ] || fail "no tokens generated"
    json 'type(b["choices"][0]["text"]).__name__' | grep -qx str || fail "no completion text"

    step "POST /v1/adapters (multipart upload)"
    http POST /v1/adapters -F "name=$ADAPTER" \
        -F "adapter_config.json=@$WORK/adapter/adapter_config.json" \
        -F "adapter_model.safetensors=@$WORK/adapter/adapter_model.safetensors"
    expect 201 "adapter upload"
    json 'b["version"]' | grep -q '^sha256:' || fail "upload answered no version"
    http GET "/v1/adapters/$ADAPTER"
    expect 200 "the uploaded adapter's descriptor"

    step "POST /v1/completions (through the adapter)"
    http POST /v1/completions -H 'Content-Type: application/json' \
        -d '{"model": "'"$ADAPTER"'", "prompt": "Hello", "max_tokens": 8, "temperature": 0}'
    expect 200 "completion through the uploaded adapter"
    [ "$(json 'b["model"]')" = "$ADAPTER" ] || fail "the answer names another model"
    [ "$(json 'b["usage"]["completion_tokens"]')" -gt 0 ] || fail "no tokens generated"

    step "GET /metrics"
    http GET /metrics
    expect 200 "/metrics"
    grep -q "^loramux_requests_total{.*adapter=\"$ADAPTER\"" "$WORK/body" ||
        fail "/metrics has no loramux_requests_total for $ADAPTER"
}

# The image's own HEALTHCHECK command, run in the container as the engine would run it.
check_healthcheck() {
    step "HEALTHCHECK"
    local cmd
    cmd=$("$ENGINE" image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE")
    case $cmd in
        *'"CMD"'*) ;;
        *) fail "the image has no HEALTHCHECK: $cmd" ;;
    esac
    local args=()
    mapfile -t args < <(python3 -c 'import json, sys
t = json.loads(sys.argv[1])["Test"]
assert t[0] == "CMD", t
print("\n".join(t[1:]))' "$cmd")
    "${ENGINE_CMD[@]}" exec "$NAME" "${args[@]}" || fail "the HEALTHCHECK command failed"
}

# ---- main ----

main() {
    choose_engine
    WORK=$(mktemp -d)
    if [ "$ENGINE" = podman ]; then
        podman_base
    else
        docker_base
    fi
    make_model
    build_image
    start_container
    check_api
    check_healthcheck
    step "passed ($ENGINE)"
}

main "$@"
