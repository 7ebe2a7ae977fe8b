#!/bin/sh
# The example's health check between rings. It stands in for what a real
# setup runs here (`argocd app wait ...` or `flux reconcile ...` plus
# `kubectl wait`), which needs a cluster: it checks that every image the
# ring's manifests name in git is pinned by digest.
# Usage: pinned.sh RING (the deploy repository is the one scripts/demo.sh made).
set -eu
repo="$(dirname "$0")/../../.graphbuild/demo/deploy.git"
unpinned=$(git --git-dir "$repo" grep -h -E '^ *(image|newTag|tag):' main -- "clusters/$1" \
    | grep -v '@sha256:' | grep -v -E 'newTag' || true)
pinned=$(git --git-dir "$repo" grep -h -E 'sha256:' main -- "clusters/$1" | wc -l)
if [ -n "$unpinned" ]; then
    echo "ring $1: not every image is pinned yet:"; echo "$unpinned"; exit 1
fi
echo "ring $1: healthy ($pinned pinned references in git)"
