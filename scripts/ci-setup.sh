#!/usr/bin/env bash
# The engines CI's tests need, set up before `make test` (.ci/run): Docker with the locally built CPU
# images, a single-node Slurm, then bubblewrap. The first setup that fails stops here with its name and a non-zero
# exit, so CI fails instead of passing with the tests that need it skipped.
#   MB_CI_SETUPS   the setup scripts, in order   ("scripts/ci-docker.sh scripts/ci-slurm.sh scripts/ci-sandbox.sh")
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a SETUPS <<<"${MB_CI_SETUPS:-scripts/ci-docker.sh scripts/ci-slurm.sh scripts/ci-sandbox.sh}"
for setup in "${SETUPS[@]}"; do
    echo "=== $setup"
    if ! "$setup"; then
        echo "ERROR: $setup failed; the tests need the engine it sets up (see its output above)" >&2
        exit 1
    fi
done
