#!/usr/bin/env bash
# Quickstart 1: install graphbuild and run its main job on the bundled example.
#
# Starts a loopback registry on localhost:5000, pushes the example's upstream
# images (stand-ins built from Debian's static busybox: no internet needed),
# creates a GitOps deploy repository from examples/deploy, runs `graphbuild
# sweep` (everything missing: built in waves, smoke-tested, deployed to the
# dev ring), publishes an "upstream fix" to one base, sweeps again (only what
# is built on it), takes that run to the manual prod ring with `graphbuild
# deploy`, shows the runs, stops what it started, and says how to go on with
# the example (graphbuild on PATH, its registry again). Run it as root or with
# sudo rights.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh

need_debs git python3-venv docker-registry buildah busybox-static
make_venv .

workspace=.graphbuild
demo=$workspace/demo
mkdir -p "$demo"
gb() { echo "+ graphbuild $*" >&2; .venv/bin/graphbuild "$@"; }
buildah() { command buildah --storage-driver vfs --root "$workspace/containers/storage" \
    --runroot "$workspace/containers/run" "$@"; }

# A registry on localhost:5000: ours, unless one already answers there.
# The demo stops the registry it started (nothing is left running, in CI or on
# a laptop) and ends by printing the one command that starts it again.
registry_pid=
stop_registry() {
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
        registry_pid=
        echo "Stopped the registry."
    fi
}
trap 'code=$?; stop_registry; exit "$code"' EXIT
registry_up() { python3 -c 'import urllib.request as u; u.urlopen("http://localhost:5000/v2/", timeout=1)' 2>/dev/null; }
if registry_up; then
    echo "Using the registry already answering on localhost:5000."
else
    cat > "$demo/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $PWD/$demo/registry}, delete: {enabled: true}}
http: {addr: "127.0.0.1:5000"}
EOF
    /usr/bin/docker-registry serve "$demo/registry.yml" > "$demo/registry.log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do registry_up && break; sleep 0.1; done
    registry_up || { echo "docker-registry did not start: see $demo/registry.log" >&2; exit 1; }
    echo "Started docker-registry on localhost:5000 (data in $demo/registry)."
fi

# push_upstream NAME RELEASE: build examples/upstream/NAME with busybox inside, push it.
push_upstream() {
    local context="$demo/upstream-$1"
    rm -rf "$context" && cp -r "examples/upstream/$1" "$context"
    cp /bin/busybox "$context/busybox"
    echo "$2" > "$context/release"
    buildah bud --isolation chroot --quiet -t "localhost:5000/upstream/$1:1" "$context" > /dev/null
    buildah push --tls-verify=false --quiet "localhost:5000/upstream/$1:1"
    echo "Pushed localhost:5000/upstream/$1:1 ($2)."
}
push_upstream os "os 12.8"
push_upstream toolbox "toolbox 1.0.0"

# The GitOps repository the example deploys to (Argo CD or Flux would watch it).
deploy_repo=$demo/deploy.git
rm -rf "$deploy_repo" "$demo/deploy-work"
git init --quiet --bare -b main "$deploy_repo"
cp -r examples/deploy "$demo/deploy-work"
git -C "$demo/deploy-work" init --quiet -b main
git -C "$demo/deploy-work" add -A
git -C "$demo/deploy-work" -c user.name=demo -c user.email=demo@localhost \
    commit --quiet -m "The example's manifests"
git -C "$demo/deploy-work" push --quiet "$PWD/$deploy_repo" main
echo "Created the deploy repository $deploy_repo from examples/deploy."

gb sync
gb uses localhost:5000/upstream/os:1
gb plan
# nothing is in the registry yet: everything is built, in waves, smoke-tested,
# and deployed to the dev ring; prod is manual
gb sweep

push_upstream toolbox "toolbox 1.0.1: security fix"
gb plan                       # only what is built on the toolbox: count, report, shop/api
gb sweep
run=$(.venv/bin/graphbuild runs --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
gb deploy "$run" --ring prod --dry-run
gb deploy "$run" --ring prod  # a person takes the run to prod
gb sweep                      # right after a good sweep: nothing to do
gb runs
echo "+ git log of the deploy repository" >&2
git --git-dir "$deploy_repo" log --format='%h %s' main

# How to go on: graphbuild on PATH, and the example's registry (with its images) again.
started=$registry_pid
stop_registry
echo
echo "The example is ready for the README's \"Using it\" lines. From $PWD:"
echo "  . .venv/bin/activate    # graphbuild on your PATH (or call .venv/bin/graphbuild)"
if [ -n "$started" ]; then
    echo "and, in a second terminal, the example's registry again (Ctrl-C stops it):"
    echo "  /usr/bin/docker-registry serve $demo/registry.yml"
fi
