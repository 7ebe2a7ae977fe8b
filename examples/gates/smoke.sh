#!/bin/sh
# The example's test gate: the new image starts and its shell answers.
# Usage: smoke.sh REPOSITORY@DIGEST (repos.yaml passes {repository}@{digest}).
set -eu
b() {
    buildah --storage-driver vfs --root .graphbuild/containers/storage \
        --runroot .graphbuild/containers/run "$@"
}
container=$(b from --quiet --tls-verify=false --pull=always "$1")
trap 'b rm "$container" > /dev/null' EXIT
b run --isolation chroot "$container" -- /bin/sh -c 'echo "smoke: $(cat /etc/upstream-release)"'
