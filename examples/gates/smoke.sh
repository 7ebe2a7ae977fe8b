#!/bin/sh
# The example's test gate: the new image starts and its shell answers.
# Usage: smoke.sh REPOSITORY@DIGEST (repos.yaml passes {repository}@{digest}).
set -eu
workspace="$(dirname "$0")/../../.graphbuild"  # the example's buildah store (repos.yaml)
b() {
    buildah --storage-driver vfs --root "$workspace/containers/storage" \
        --runroot "$workspace/containers/run" "$@"
}
container=$(b from --quiet --tls-verify=false --pull=always "$1")
trap 'b rm "$container" > /dev/null' EXIT
b run --isolation chroot "$container" -- /bin/sh -c 'echo "smoke: $(cat /etc/upstream-release)"'
