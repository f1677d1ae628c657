#!/usr/bin/env bash
# bubblewrap for the local runtime's sandbox of code-executing stages (Debian's package), checked by
# making the namespaces it needs: CI fails here rather than skipping the hostile-program tests.
set -euo pipefail
if ! command -v bwrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq bubblewrap >/dev/null
fi
bwrap --ro-bind / / --unshare-all --unshare-user true \
    || { echo "ci-sandbox: bwrap cannot make user, network, IPC and PID namespaces here" >&2; exit 1; }
echo "ci-sandbox: $(bwrap --version) makes its namespaces"
