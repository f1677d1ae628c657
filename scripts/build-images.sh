#!/usr/bin/env bash
# Build the mergebench container images (docker/<image>/Dockerfile) from this repository.
#
#   scripts/build-images.sh [--track modern|faithful|cpu] [--base IMAGE] [--local-wheels DIR]
#                           [--push REGISTRY/PREFIX] [--build-arg K=V]... [IMAGE...]
#
# IMAGE defaults to every image that has a lock for the track (plus sandbox). Tags follow
# docker/images.yaml: mergebench/<image>:<kit version>-<track> (sandbox is always the cpu track);
# --push also tags REGISTRY/PREFIX/<image>:<same tag> and pushes it. The build context is a tar of
# exactly what the Dockerfiles copy (pyproject.toml, README.md, mergebench/, docker/<image>/,
# docker/wheels/), so nothing else of the checkout (.venv, workspace, models) reaches the daemon.
# --local-wheels DIR stages DIR/*.whl into docker/wheels/ for the build and removes them after
# (the cpu track's torch 2.13.0+cpu lives in /opt/wheels on CI machines; it is never committed).
# --bigcode-src DIR: the bigcode image takes bigcode-evaluation-harness from that local clone, exported at
# the Dockerfile's BIGCODE_COMMIT into docker/bigcode/src/ for the build (git-ignored, removed after).
set -euo pipefail
cd "$(dirname "$0")/.."

TRACK=modern
BASE=""
WHEELS=""
PUSH="${PUSH:-}"
BIGCODE_SRC=""
EXTRA=()
IMAGES=()
while (($#)); do
    case "$1" in
        --track) TRACK="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --local-wheels) WHEELS="$2"; shift 2 ;;
        --push) PUSH="$2"; shift 2 ;;
        --build-arg) EXTRA+=(--build-arg "$2"); shift 2 ;;
        --bigcode-src) BIGCODE_SRC="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) IMAGES+=("$1"); shift ;;
    esac
done

KIT_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
if ((${#IMAGES[@]} == 0)); then
    for image in train lmeval bigcode safety; do
        [[ -e "docker/$image/requirements.$TRACK.lock" ]] || continue
        IMAGES+=("$image")
    done
    IMAGES+=(sandbox)
fi

staged=()
cleanup() {
    ((${#staged[@]})) && rm -f "${staged[@]}"
    [[ -z "$BIGCODE_SRC" ]] || rm -rf docker/bigcode/src
    return 0
}
trap cleanup EXIT
if [[ -n "$WHEELS" ]]; then
    for whl in "$WHEELS"/*.whl; do
        [[ -e "$whl" ]] || continue
        dest="docker/wheels/$(basename "$whl")"
        [[ -e "$dest" ]] || { cp "$whl" "$dest.partial" && mv "$dest.partial" "$dest" && staged+=("$dest"); }
    done
fi

if [[ -n "$BIGCODE_SRC" ]]; then
    commit="$(sed -n 's/^ARG BIGCODE_COMMIT=//p' docker/bigcode/Dockerfile)"
    git -C "$BIGCODE_SRC" cat-file -e "$commit^{commit}" 2>/dev/null \
        || { echo "$BIGCODE_SRC: not a clone of bigcode-evaluation-harness holding commit $commit" >&2; exit 2; }
    rm -rf docker/bigcode/src
    mkdir -p docker/bigcode/src
    git -C "$BIGCODE_SRC" archive "$commit" | tar -x -C docker/bigcode/src
    echo "$commit" > docker/bigcode/src/.commit
fi

export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"   # the legacy builder needs no buildx plugin
for image in "${IMAGES[@]}"; do
    track="$TRACK"; [[ "$image" == sandbox ]] && track=cpu
    dockerfile="docker/$image/Dockerfile"
    [[ -f "$dockerfile" ]] || { echo "no $dockerfile" >&2; exit 2; }
    args=(--build-arg "KIT_VERSION=$KIT_VERSION" --build-arg "TRACK=$track")
    if [[ "$image" != sandbox ]]; then
        lock="docker/$image/requirements.$track.lock"
        [[ -f "$lock" ]] || { echo "no $lock: the $image image has no $track track" >&2; exit 2; }
        args+=(--build-arg "LOCK_SHA256=$(sha256sum "$lock" | cut -d' ' -f1)")
    fi
    [[ -n "$BASE" ]] && args+=(--build-arg "BASE_IMAGE=$BASE")
    tag="mergebench/$image:$KIT_VERSION-$track"
    echo "=== building $tag"
    start=$SECONDS
    context=(pyproject.toml README.md mergebench "docker/$image")
    grep -q '^COPY docker/wheels/' "$dockerfile" && context+=(docker/wheels)
    tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.partial' "${context[@]}" \
        | docker build --network host -f "$dockerfile" -t "$tag" "${args[@]}" "${EXTRA[@]}" -
    echo "=== built $tag in $((SECONDS - start)) s"
    if [[ -n "$PUSH" ]]; then
        remote="${PUSH%/}/$image:$KIT_VERSION-$track"
        docker tag "$tag" "$remote"
        docker push "$remote"
    fi
done
