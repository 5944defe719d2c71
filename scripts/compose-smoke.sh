#!/usr/bin/env bash
# End-to-end check of the docker-compose cluster, from the images up:
#
#   1. builds the images (local variant: a debootstrap'd Debian base and
#      js-ipfs in Kubo's place, so no image registry is needed);
#   2. runs word count over examples/data/gutenberg in one container with
#      --local-peers 2: the reference output CID;
#   3. starts the cluster as the README says (master-id, then the peers, which
#      wait for the daemon's healthcheck) and runs the master: the output CID
#      must be the reference's and all three peers must have joined;
#   4. runs the master again (a restart, same identity; --fresh so that every
#      task runs again): the peers must rejoin and the CID must not change;
#   5. removes the cluster's containers, network and volumes, and the images
#      it built, on success, failure or Ctrl-C.
#
#   scripts/compose-smoke.sh [--keep-images] [--kubo]
#
# --keep-images  keep the images (p2pmr-smoke, p2pmr-smoke-jsipfs, the base)
#                and their build cache, for a faster next run.
# --kubo         use docker-compose.yml alone: real Kubo and python:3.11-slim,
#                pulled from Docker Hub, instead of the local variant.
#
# Environment: P2PMR_EXTRA_CA, a PEM file or a directory of *.crt files to
# trust while building (for pip and npm behind a TLS-intercepting proxy);
# unset, the certificates in /usr/local/share/ca-certificates are used if
# there are any; empty, none. Every wait is bounded; P2PMR_SMOKE_TIMEOUT
# (seconds, default 300) bounds each job.
#
# Starts a Docker daemon if none answers (and stops it afterwards), and
# installs docker.io, docker-compose and debootstrap with apt-get if they are
# missing; both need root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

keep_images=0
variant=local
for arg in "$@"; do
    case "$arg" in
        --keep-images) keep_images=1 ;;
        --kubo) variant=kubo ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--keep-images] [--kubo]" >&2; exit 2 ;;
    esac
done
job_timeout="${P2PMR_SMOKE_TIMEOUT:-300}"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
project="p2pmr-smoke-$(date +%s)-$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/p2pmr-smoke.XXXXXX")"
# Fixed names, so that an unchanged certificate keeps the build cache valid.
ca_prefix="docker/extra-ca/compose-smoke-"
dockerd_pid=""
# The compose files read these: images named after the project, so that the
# run neither uses nor removes anybody else's.
export COMPOSE_PROJECT_NAME="$project"
if [ "$keep_images" -eq 1 ]; then  # kept: one name, replaced by the next run
    export P2PMR_IMAGE=p2pmr-smoke P2PMR_JSIPFS_IMAGE=p2pmr-smoke-jsipfs
else
    export P2PMR_IMAGE="$project-p2pmr" P2PMR_JSIPFS_IMAGE="$project-jsipfs"
fi
export P2PMR_BASE_IMAGE="${P2PMR_BASE_IMAGE:-p2pmr-base:bookworm}"
unset MASTER_ID P2PMR_RUN_ARGS COMPOSE_FILE
built_base=0
cluster_started=0
dangling_before=""
compose=()

# ---- reporting ---------------------------------------------------------------
start_time=$(date +%s.%N)
stage_name=""
stage_start=""
timings=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
stage() {
    local t
    t=$(now)
    if [ -n "$stage_name" ]; then
        timings+=("$(printf '%-34s %7s s' "$stage_name" "$(elapsed "$stage_start" "$t")")")
    fi
    stage_name="$1"
    stage_start="$t"
    [ -z "$1" ] || echo "==> $1" >&2
}
fail() {
    echo "compose-smoke: FAILED: $*" >&2
    exit 1
}
# bounded SECONDS COMMAND...: COMMAND, stopped after SECONDS. It runs in the
# background so that Ctrl-C interrupts the wait at once (`timeout` puts
# COMMAND in a process group of its own, out of the terminal's reach).
bounded_pid=""
bounded() {
    local limit="$1" status=0
    shift
    timeout "$limit" "$@" &
    bounded_pid=$!
    wait "$bounded_pid" || status=$?
    bounded_pid=""
    [ "$status" -ne 124 ] || echo "compose-smoke: timed out after $limit s: $*" >&2
    return "$status"
}
report() {
    stage ""
    echo "--- stage timings" >&2
    local line
    for line in "${timings[@]}"; do echo "    $line" >&2; done
    printf '    %-34s %7s s\n' "total" "$(elapsed "$start_time" "$(now)")" >&2
}

# ---- clean-up: on success, failure and Ctrl-C ----------------------------------
# The script's own stdout and stderr: a trap that fires inside a redirected
# command (the wait in `bounded ... >file`) would otherwise write there.
exec 3>&1 4>&2
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    exec 1>&3 2>&4
    if [ -n "$bounded_pid" ]; then  # interrupted: stop what it waited for
        kill -TERM "$bounded_pid" 2>/dev/null
        wait "$bounded_pid" 2>/dev/null
    fi
    if [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ] \
            && [ "$cluster_started" -eq 1 ]; then
        echo "--- logs of the cluster (last 40 lines a service)" >&2
        timeout 30 "${compose[@]}" logs --no-color --tail 40 >&2 2>&1
        for f in "$work"/master-*.err; do
            [ -f "$f" ] && { echo "--- $(basename "$f")" >&2; tail -n 40 "$f" >&2; }
        done
    fi
    stage "tear down"
    if [ "${#compose[@]}" -gt 0 ]; then
        timeout 120 "${compose[@]}" down --volumes --remove-orphans --timeout 10 \
            >/dev/null 2>&1
    fi
    # Whatever `down` left behind (one-off containers of a killed `run`, say).
    if docker info >/dev/null 2>&1; then
        local label="label=com.docker.compose.project=$project"
        docker ps -aq --filter "$label" | xargs -r docker rm -f -v >/dev/null 2>&1
        docker rm -f -v "$project-reference" >/dev/null 2>&1
        docker volume ls -q --filter "$label" | xargs -r docker volume rm -f >/dev/null 2>&1
        docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1
        if [ "$keep_images" -eq 0 ]; then
            docker image rm -f "$P2PMR_IMAGE" "$P2PMR_JSIPFS_IMAGE" >/dev/null 2>&1
            [ "$built_base" -eq 0 ] || docker image rm -f "$P2PMR_BASE_IMAGE" >/dev/null 2>&1
            # Build stages and layers this run left untagged.
            local id
            for id in $(docker images -q --filter dangling=true); do
                grep -qx "$id" <<<"$dangling_before" || docker image rm -f "$id" >/dev/null 2>&1
            done
        fi
    fi
    rm -f "$ca_prefix"*
    if [ -n "$dockerd_pid" ]; then
        echo "stopping the Docker daemon this script started" >&2
        $sudo kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 30); do $sudo kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$work"
    report
    if [ "$status" -eq 0 ]; then
        echo "compose-smoke: OK" >&2
    else
        echo "compose-smoke: FAILED (exit $status)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- prerequisites -------------------------------------------------------------
stage "prerequisites"
apt_install() {
    command -v apt-get >/dev/null 2>&1 || fail "missing $*, and no apt-get to install it"
    echo "installing $* with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "$@" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null
    } || fail "apt-get install $* failed"
}
missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [ "$variant" = local ] && ! command -v debootstrap >/dev/null 2>&1 \
        && [ ! -x /usr/sbin/debootstrap ]; then
    missing+=(debootstrap)
fi
if ! { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; } \
        && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || fail "no Docker daemon answers, and dockerd is missing"
    echo "starting a Docker daemon (log: $work/dockerd.log)" >&2
    $sudo dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 1
    done
    docker info >/dev/null 2>&1 || {
        tail -n 20 "$work/dockerd.log" >&2
        fail "the Docker daemon did not come up within 60 s (its log is above)"
    }
fi
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    compose_cmd=(docker-compose)
fi
echo "using $("${compose_cmd[@]}" version 2>/dev/null | head -n 1)" >&2

if [ "$variant" = local ]; then
    files=(-f docker-compose.yml -f docker-compose.local.yml)
else
    files=(-f docker-compose.yml)
fi
# Both files must also be valid without MASTER_ID (which used to be required
# when the file was read, so `run master-id` could not create it).
bounded 60 "${compose_cmd[@]}" -f docker-compose.yml config -q \
    || fail "docker-compose.yml is not valid"
bounded 60 "${compose_cmd[@]}" "${files[@]}" config -q || fail "the compose files are not valid"
compose=("${compose_cmd[@]}" "${files[@]}")
dangling_before="$(docker images -q --filter dangling=true)"

# ---- images --------------------------------------------------------------------
if [ "$variant" = local ]; then
    stage "base image (debootstrap)"
    if ! docker image inspect "$P2PMR_BASE_IMAGE" >/dev/null 2>&1; then
        built_base=1
        bounded 1200 scripts/docker-base.sh || fail "scripts/docker-base.sh failed"
    else
        echo "$P2PMR_BASE_IMAGE exists" >&2
    fi
fi

stage "build images"
# Extra CA certificates for pip and npm in the builds, removed on exit.
ca_source="${P2PMR_EXTRA_CA-/usr/local/share/ca-certificates}"
rm -f "$ca_prefix"*  # a killed run's
if [ -f "$ca_source" ]; then
    cp "$ca_source" "${ca_prefix}0.crt"
elif [ -d "$ca_source" ]; then
    n=0
    while IFS= read -r -d '' crt; do
        cp "$crt" "${ca_prefix}$n.crt"
        n=$((n + 1))
    done < <(find "$ca_source" -name '*.crt' -type f -print0)
fi
ls "$ca_prefix"* >/dev/null 2>&1 && echo "trusting $(ls "$ca_prefix"* | wc -l) extra CA certificate(s) from $ca_source in the builds" >&2
build_opts=()  # Compose v1's builder leaves a failed step's container without this
[ "${compose_cmd[0]}" != docker-compose ] || build_opts=(--force-rm)
bounded 1800 "${compose[@]}" build "${build_opts[@]}" >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    if grep -q -i -E 'CERTIFICATE_VERIFY_FAILED|self.signed certificate' "$work/build.log"; then
        echo "compose-smoke: TLS verification failed in the build: behind an intercepting" \
            "proxy, point P2PMR_EXTRA_CA at its CA certificate(s)" >&2
    fi
    fail "building the images failed (the end of the build log is above)"
}
rm -f "$ca_prefix"*
for image in "$P2PMR_IMAGE" $([ "$variant" = local ] && echo "$P2PMR_JSIPFS_IMAGE"); do
    echo "$image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')" >&2
done

# ---- reference -----------------------------------------------------------------
stage "reference run (--local-peers 2)"
bounded "$job_timeout" docker run --rm --name "$project-reference" --network none "$P2PMR_IMAGE" \
    run examples/wordcount.py --input examples/data/gutenberg --reducers 4 \
    --local-peers 2 --repo /tmp/reference --no-progress \
    >"$work/reference.out" 2>"$work/reference.err" || {
    tail -n 40 "$work/reference.err" >&2
    fail "the reference run failed"
}
reference="$(tail -n 1 "$work/reference.out")"
[[ "$reference" =~ ^(Qm|baf)[1-9A-Za-z]+$ ]] || fail "the reference run printed no CID: '$reference'"
echo "reference output CID: $reference" >&2

# ---- the README's sequence -----------------------------------------------------
stage "master identity"
cluster_started=1
MASTER_ID="$(bounded 120 "${compose[@]}" run --rm -T master-id 2>"$work/master-id.err")" || {
    cat "$work/master-id.err" >&2
    fail "docker compose run master-id failed"
}
[[ "$MASTER_ID" =~ ^12D3Koo[1-9A-Za-z]+$ ]] || fail "master-id printed no peer ID: '$MASTER_ID'"
export MASTER_ID
echo "MASTER_ID=$MASTER_ID" >&2

stage "start daemon and peers"
bounded 240 "${compose[@]}" up -d peer1 peer2 peer3 >"$work/up.log" 2>&1 || {
    cat "$work/up.log" >&2
    fail "docker compose up failed (did the daemon's healthcheck pass?)"
}
peers=()
for service in peer1 peer2 peer3; do
    container="$("${compose[@]}" ps -q "$service")"
    [ -n "$container" ] || fail "$service has no container"
    id=""
    for _ in $(seq 60); do
        id="$(docker logs "$container" 2>&1 | sed -n 's/^Peer ID: \(12D3Koo[1-9A-Za-z]*\).*/\1/p' | head -n 1)"
        [ -z "$id" ] || break
        [ "$(docker inspect -f '{{.State.Running}}' "$container")" = true ] \
            || fail "$service exited: $(docker logs --tail 20 "$container" 2>&1)"
        sleep 1
    done
    [ -n "$id" ] || fail "$service printed no peer ID within 60 s"
    peers+=("$id")
done
echo "peers: ${peers[*]}" >&2

# run_master N EXTRA_ARGS: run the master service; check the CID and that every
# peer joined; print how long after the start the last one joined.
run_master() {
    local n="$1" args="$2" started cid joined last
    started=$(now)
    P2PMR_RUN_ARGS="--no-progress --wait-for-workers 60 $args" \
        bounded "$job_timeout" "${compose[@]}" run --rm -T --use-aliases master \
        >"$work/master-$n.out" 2>"$work/master-$n.err" \
        || fail "master run $n failed or timed out (${job_timeout} s)"
    cid="$(tail -n 1 "$work/master-$n.out")"
    grep -m 1 '^job .* finished' "$work/master-$n.err" >&2 || true
    [ "$cid" = "$reference" ] || fail "master run $n: output CID $cid, the reference's is $reference"
    for id in "${peers[@]}"; do
        grep -q "peer $id joined" "$work/master-$n.err" || fail "master run $n: peer $id never joined"
    done
    grep -q "tasks: [1-9][0-9]* run" "$work/master-$n.err" \
        || fail "master run $n ran no task on the peers"
    joined="$(grep ' joined$' "$work/master-$n.err" | tail -n 1 | cut -c1-23 | tr , .)"
    last="$(date -u -d "$joined" +%s.%N 2>/dev/null || echo "$started")"
    echo "master run $n: output $cid, all 3 peers joined $(elapsed "$started" "$last") s after \`run\`" >&2
}

stage "job 1 on the cluster"
run_master 1 ""
bounded 60 "${compose[@]}" run --rm -T --no-deps --entrypoint ls master /data/output \
    >"$work/output.ls" 2>/dev/null || fail "cannot list /data/output in the master's volume"
grep -qx part-00000 "$work/output.ls" || fail "no part-00000 in the master's /data/output"

stage "job 2 after a master restart"
run_master 2 "--fresh"

stage ""
echo "compose-smoke: the cluster's output matches the reference ($reference), before and after a master restart" >&2
