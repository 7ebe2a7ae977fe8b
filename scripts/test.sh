#!/usr/bin/env bash
# Quickstart 2: install the test dependencies, lint, type-check, and run the whole test suite,
# then the command line's tests on the lowest versions pyproject.toml allows
# (scripts/test_lowest.sh). Extra arguments go to pytest and skip the lowest-versions run
# (scripts/test.sh -k graph -x). The suite runs on every core.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh

# git for remotes; docker-registry and buildah for real registries and builds; static busybox
# for the demo's stand-in images, built FROM scratch (tests/test_readme.py)
need_debs git python3-venv docker-registry buildah busybox-static
# a real headless browser for the web view's tests (tests/browser.py)
need_debs chromium chromium-driver
# kubectl, the real client of the kubectl deployer's tests (Debian's package, where apt has it)
if ! command -v kubectl >/dev/null; then
    need_debs kubernetes-client || echo "kubectl could not be installed: its tests will say so."
fi
make_venv '.[test]'
set -x
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # pyproject.toml [tool.mypy]: the whole package, the core strictly
# one pytest worker per core (pytest-xdist): each test has its own folders, ports and
# registry, and a worker its own copy of session fixtures; `-n 0` runs in one process
.venv/bin/pytest -n auto "$@"
[ $# -gt 0 ] || scripts/test_lowest.sh
