# Shared by scripts/demo and scripts/test: Debian packages and the project's virtualenv.
# Sourced, not run. Works as root (CI) or as a user with sudo; a user without sudo is told
# what to run as root.

# need_debs PKG...: install the Debian/Ubuntu packages that are missing. Returns 2, having
# said which packages and the command to run as root, when it cannot install them itself.
need_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "Missing Debian packages: ${missing[*]}. As root, run:" >&2
            echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
            return 2
        fi
        sudo=(sudo)
    fi
    echo "Installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# make_venv SPEC: create .venv (Python 3.11+) and install SPEC into it editable (`pip install
# -e`), so graphbuild, and the tests' `python -m graphbuild`, run this checkout's code as it
# is edited, not a copy made at install time.
make_venv() {
    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "graphbuild needs Python 3.11 or newer ($python is $("$python" --version 2>&1))." >&2
        exit 2
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --editable "$1"
}
