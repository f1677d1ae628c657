#!/usr/bin/env bash
# Build the GPU (modern) track of the images on this host and smoke-test each on CPU, one at a time.
#
#   scripts/gpu-images-smoke.sh [--base IMAGE] [--bigcode-src DIR] [--keep] [--no-build] [IMAGE...]
#
# Per image: the build's wall time, the image's size, an import of everything it holds, and one tiny
# stage on CPU with no network (train: the tiny family and a TIES merge; lmeval: the tiny suite through
# lm-eval's hf backend; bigcode: the harness's own code_eval on a correct and a wrong program). One
# line per image goes to the table printed at the end (docs/containers.md records the latest one).
# --base swaps the registry base for a local one (scripts/ci-docker.sh makes mergebench-local/
# debian-python:bookworm-3.11); without --keep each image is removed after its smoke (they are 7-12 GB).
# IMAGE defaults to train lmeval bigcode (safety needs safety-eval-fork's source; name it to try).
# NLTK_PUNKT=skip builds lmeval without baking punkt_tab (NLTK's data server is GitHub; the plan's
# fetch/lmeval stage brings it to the workspace in any case).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=""; BIGCODE_SRC=""; KEEP=0; BUILD=1; IMAGES=()
while (($#)); do
    case "$1" in
        --base) BASE="$2"; shift 2 ;;
        --bigcode-src) BIGCODE_SRC="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) IMAGES+=("$1"); shift ;;
    esac
done
((${#IMAGES[@]})) || IMAGES=(train lmeval bigcode)
KIT_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"

tiny_family='mergebench tiny build --out /tmp/family >/dev/null'
declare -A IMPORTS=(
    [train]="import accelerate, deepspeed, mergebench, safetensors, torch, transformers, trl"
    [lmeval]="import lm_eval, mergebench, nltk, torch, transformers, vllm"
    [bigcode]="import accelerate, datasets, mergebench, torch, transformers; import sys; sys.path.insert(0, '/opt/bigcode-evaluation-harness'); import bigcode_eval.tasks"
    [safety]="import mergebench, torch, transformers, vllm"
)
declare -A STAGE=(
    [train]="$tiny_family && mergebench merge -m ties -b /tmp/family/base \$(for d in \$(ls /tmp/family); do test -f /tmp/family/\$d/config.json -a \$d != base -a \$d != multitask && printf -- '-e /tmp/family/%s ' \$d; done) -o /tmp/merged >/dev/null && test -f /tmp/merged/model.safetensors -o -f /tmp/merged/model.safetensors.index.json && echo 'ties merge of the tiny family written'"
    [lmeval]="$tiny_family && mergebench eval --suite tiny --model /tmp/family/base --data /tmp/family/data --limit 4 --out /tmp/eval | tail -4"
    [bigcode]="cd /opt/bigcode-evaluation-harness && HF_ALLOW_CODE_EVAL=1 python -c \"from bigcode_eval.tasks.custom_metrics.code_eval import compute_code_eval as c; r, _ = c(predictions=[['def f(x):\\n    return x + 1'], ['def f(x):\\n    return x']], references=['assert f(1) == 2', 'assert f(1) == 2'], k=[1]); print('code_eval pass@1 of one right, one wrong program:', r['pass@1']); assert r['pass@1'] == 0.5\""
    [safety]="$tiny_family && echo 'kit runs'"
)

rows=()
for image in "${IMAGES[@]}"; do
    tag="mergebench/$image:$KIT_VERSION-modern"
    build_s="-"
    if ((BUILD)); then
        args=(--track modern ${BASE:+--base "$BASE"})
        [[ "$image" == bigcode && -n "$BIGCODE_SRC" ]] && args+=(--bigcode-src "$BIGCODE_SRC")
        [[ "$image" == lmeval ]] && args+=(--build-arg "NLTK_PUNKT=${NLTK_PUNKT:-download}")
        start=$SECONDS
        scripts/build-images.sh "${args[@]}" "$image"
        build_s=$((SECONDS - start))
    fi
    size="$(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.2f GB", $1 / 1e9}')"
    echo "=== $tag: imports"
    docker run --rm --network none "$tag" python -c "${IMPORTS[$image]}" && imports=ok || imports=FAILED
    echo "=== $tag: one tiny stage on CPU"
    start=$SECONDS
    docker run --rm --network none -e CUDA_VISIBLE_DEVICES= "$tag" bash -c "${STAGE[$image]}" && smoke=ok || smoke=FAILED
    rows+=("| $image | $build_s s | $size | $imports | $smoke ($((SECONDS - start)) s) |")
    ((KEEP)) || docker image rm "$tag" >/dev/null
done

echo
echo "GPU track (modern) on $(date +%F), base ${BASE:-python:3.11-slim}:"
echo "| image | build | size | imports | tiny CPU stage |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
! printf '%s\n' "${rows[@]}" | grep -q FAILED
