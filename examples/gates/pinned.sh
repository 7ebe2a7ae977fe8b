#!/bin/sh
# The example's health check between rings. It stands in for what a real
# setup runs here (`argocd app wait ...` or `flux reconcile ...` plus
# `kubectl wait`), which needs a cluster: it checks that every image the
# ring's manifests name in git is pinned by digest.
# Usage: pinned.sh GIT_DIR RING
set -eu
unpinned=$(git --git-dir "$1" grep -h -E '^ *(image|newTag|tag):' main -- "clusters/$2" \
    | grep -v '@sha256:' | grep -v -E 'newTag' || true)
pinned=$(git --git-dir "$1" grep -h -E 'sha256:' main -- "clusters/$2" | wc -l)
if [ -n "$unpinned" ]; then
    echo "ring $2: not every image is pinned yet:"; echo "$unpinned"; exit 1
fi
echo "ring $2: healthy ($pinned pinned references in git)"
