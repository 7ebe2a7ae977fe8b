#!/usr/bin/env bash
# The lowest versions pyproject.toml allows: a second venv, .venv-lowest, with graphbuild's
# direct dependencies at their floors and no extras (so no Azure SDK either), and the tests
# of the command line run against it. pip has no "lowest" resolution: the floors, each `>=`
# in [project] dependencies, become a constraints file of `==`; what they depend on is
# resolved as a user's pip would. scripts/test.sh runs it after the main suite; extra
# arguments go to pytest. /metrics (tests/test_metrics.py) checks prometheus-client's floor.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-lowest
[ -x $venv/bin/python ] || "$python" -m venv $venv
$venv/bin/python - pyproject.toml >$venv/floors.txt <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    for dependency in tomllib.load(file)["project"]["dependencies"]:
        floor = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)", dependency)
        if floor is None:
            sys.exit(f"pyproject.toml: {dependency!r} has no floor (>=) to test")
        print(f"{floor[1]}=={floor[3]}")
PY
$venv/bin/python -m pip install --quiet --upgrade pip
$venv/bin/python -m pip install --quiet --constraint $venv/floors.txt --editable . \
    "pytest>=8" "pytest-timeout>=2.3"
echo "Lowest versions: $(paste -sd ' ' $venv/floors.txt)"
$venv/bin/python -m pytest -p no:cacheprovider tests/test_cli.py tests/test_packaging.py tests/test_metrics.py "$@"
