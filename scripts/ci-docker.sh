#!/usr/bin/env bash
# Idempotent Docker setup for CI machines (Debian, root, no registry, no GPU):
#   1. install docker.io and debootstrap when missing;
#   2. start dockerd (no bridge, no iptables: containers run with --network none) when not running;
#   3. build the local Debian + Python 3.11 base image (cached by tag, scripts/make-debian-base.sh);
#   4. build the cpu variants of the images the tiny pipeline needs (train, lmeval) and the sandbox,
#      FROM that base, with the local CPU torch wheel (/opt/wheels) staged into the build context;
#      bigcode's cpu track needs a local clone of its harness (make rehearse BIGCODE_SRC=...) and safety a GPU:
#      neither is built here.
# Docker's layer cache makes a second run take seconds. Environment knobs:
#   MB_LOCAL_BASE   base image tag           (mergebench-local/debian-python:bookworm-3.11)
#   MB_WHEELS       local wheel folder        (/opt/wheels)
#   MB_CI_IMAGES    images to build           ("sandbox train lmeval")
#   MB_LMEVAL_PUNKT download | skip           (skip: NLTK's data server is GitHub, unreachable in CI)
#   MB_DOCKERD_WAIT seconds to wait for a dockerd it starts (60)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="${MB_LOCAL_BASE:-mergebench-local/debian-python:bookworm-3.11}"
WHEELS="${MB_WHEELS:-/opt/wheels}"
read -r -a IMAGES <<<"${MB_CI_IMAGES:-sandbox train lmeval}"
PUNKT="${MB_LMEVAL_PUNKT:-skip}"
t0=$SECONDS
step() { echo "--- [$((SECONDS - t0)) s] $*"; }

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
    step "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    step "starting dockerd"
    log="${MB_DOCKERD_LOG:-/var/log/mergebench-dockerd.log}"
    nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
    for _ in $(seq "${MB_DOCKERD_WAIT:-60}"); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$log" >&2; echo "dockerd did not come up" >&2; exit 1; }
fi

step "base image $BASE"
MB_LOCAL_BASE="$BASE" scripts/make-debian-base.sh "$BASE"

# The images build in parallel (two cores: one unpacks wheels while the other downloads); each build's
# output goes to its own log, printed when it fails.
logdir="$(mktemp -d /tmp/mergebench-ci-docker.XXXXXX)"
staged=()
trap '((${#staged[@]} == 0)) || rm -f "${staged[@]}"' EXIT
for whl in "$WHEELS"/*.whl; do   # staged once for all builds (git-ignored), removed at exit
    [[ -e "$whl" ]] || continue
    dest="docker/wheels/$(basename "$whl")"
    [[ -e "$dest" ]] || { cp "$whl" "$dest.partial" && mv "$dest.partial" "$dest" && staged+=("$dest"); }
done
pids=()
for image in "${IMAGES[@]}"; do
    extra=()
    [[ "$image" == lmeval ]] && extra=(--build-arg "NLTK_PUNKT=$PUNKT")
    step "image $image (cpu track) -> $logdir/$image.log"
    scripts/build-images.sh --track cpu --base "$BASE" "${extra[@]}" "$image" \
        >"$logdir/$image.log" 2>&1 &
    pids+=("$!")
done
failed=0
for i in "${!pids[@]}"; do
    image="${IMAGES[$i]}"
    if wait "${pids[$i]}"; then
        grep '^=== built' "$logdir/$image.log" || true
    else
        failed=1
        echo "!!! building $image failed:" >&2
        tail -40 "$logdir/$image.log" >&2
    fi
done
((failed == 0)) || exit 1
rm -rf "$logdir"
step "done"
