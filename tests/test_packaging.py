"""How graphbuild is installed: without its Azure extra, by the scripts, and as a checkout.

The Azure SDK is the extra `graphbuild[azure]`. These tests run graphbuild in a process where
`azure` cannot be imported, as after `pip install .` (scripts/test_lowest.sh also runs them
in a venv that has no Azure SDK at all).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .site import require

ROOT = Path(__file__).resolve().parent.parent
EXTRA = "pip install 'graphbuild[azure]'"

# Runs `python -m graphbuild ARGS` with every `azure` module unimportable.
WITHOUT_AZURE = """
import runpy, sys
from importlib.abc import MetaPathFinder

class NoAzure(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoAzure())
sys.argv = ["graphbuild", *sys.argv[1:]]
runpy.run_module("graphbuild", run_name="__main__", alter_sys=True)
"""


def without_azure(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.pop("GRAPHBUILD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_AZURE, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


AZURE = (
    "azure:\n"
    "  subscription: 00000000-0000-0000-0000-000000000000\n"
    "  resource_group: rg\n"
    "  registry: myacr\n"
)


def fleet(tmp_path: Path, top: str = "", base: str = "127.0.0.1:9/upstream/os:1") -> Path:
    """One local-folder repository whose image is built on `base`, with `top` keys added."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text(f"FROM {base}\n")
    (tmp_path / "repos.yaml").write_text(
        top + "repos:\n  - name: app\n    path: app\n"
        "    images: [{image: myacr.azurecr.io/app, tags: ['1']}]\n"
    )
    return tmp_path


def test_without_the_azure_sdk_everything_else_works(tmp_path):
    """Azure keys in repos.yaml do not stop what needs no Azure SDK."""
    project = fleet(tmp_path, AZURE + "mirrors:\n  127.0.0.1:9: myacr.azurecr.io/mirror\n")
    done = without_azure("uses", "127.0.0.1:9/upstream/os", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "myacr.azurecr.io/app:1" in done.stdout
    for args in (["parents", "myacr.azurecr.io/app"], ["images"], ["bases"],
                 ["graph", "--format", "dot"], ["plan", "--updated", "127.0.0.1:9/upstream/os:1"],
                 ["acr", "webhook", "create", "--help"]):  # fmt: skip
        done = without_azure(*args, cwd=project)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("top", "args", "feature"),
    [
        (AZURE + "builder: {kind: acr}\n", ["rebuild", "myacr.azurecr.io/app"],
         "builder.kind acr"),
        (AZURE + "builder: {kind: acr}\n", ["sweep"], "builder.kind acr"),
        (AZURE + "mirrors:\n  127.0.0.1:9: myacr.azurecr.io/mirror\n", ["mirror"], "mirror"),
        (AZURE + "mirrors:\n  127.0.0.1:9: myacr.azurecr.io/mirror\n",
         ["listen", "--host", "127.0.0.1", "--port", "0"], "listen with `mirrors:`"),
        (AZURE, ["acr", "webhook", "create", "https://hooks.example.invalid/"],
         "acr webhook create"),
        ("registries:\n  myacr.azurecr.io: {auth: acr}\n", ["check"],
         "registries.myacr.azurecr.io.auth acr"),
    ],
    ids=["builder-acr", "sweep-acr", "mirror", "listen", "webhook", "auth-acr"],
)  # fmt: skip
def test_an_azure_feature_without_the_sdk_names_the_extra(tmp_path, top, args, feature):
    project = fleet(tmp_path, top, base="myacr.azurecr.io/upstream/os:1")
    done = without_azure(*args, cwd=project)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"graphbuild: {feature}") and last.endswith(EXTRA), done.stderr
    if feature == "builder.kind acr":  # said before any work, not after a sync and a check
        assert "Synced" not in done.stderr


@pytest.mark.parametrize(("required", "answer"), [(False, "None"), (True, "AuthError")])
def test_acr_sign_in_without_the_sdk(tmp_path, required, answer):
    """`auth: auto` on *.azurecr.io reads anonymously, as with no Azure identity; `auth: acr`
    (stopped earlier by Registry()) names the extra."""
    code = WITHOUT_AZURE.split("sys.argv =")[0] + (
        "import httpx\n"
        "from graphbuild.registry.auth import AcrAuth, AuthError\n"
        "auth = AcrAuth(httpx.Client(), lambda: None, None, 5.0)\n"
        f"auth.required = {required}\n"
        "try:\n    print(auth._entra_token())\n"
        "except AuthError as err:\n    print('AuthError', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(answer)
    assert (EXTRA in done.stdout) == required


def test_the_azure_sdk_is_an_extra():
    """`pip install .` brings no Azure package; `.[azure]` and `.[test]` do."""
    plain, extras = [], {}
    for requirement in importlib.metadata.requires("graphbuild") or []:
        name, _, marker = requirement.partition(";")
        if "extra ==" in marker:
            extra = marker.split("extra ==")[1].strip().strip("\"'")
            extras.setdefault(extra, []).append(name)
        else:
            plain.append(name)
    assert plain and not [name for name in plain if name.startswith("azure")]
    assert any(name.startswith("azure-mgmt-containerregistry") for name in extras["azure"])
    assert any(name.startswith("graphbuild[azure]") for name in extras["test"])


def test_subprocesses_run_this_checkouts_code(tmp_path):
    """Tests run `python -m graphbuild`: with a non-editable install they would test the code
    of the last install, not the edit. scripts/test.sh installs editable (`pip install -e`)."""
    done = subprocess.run(
        [sys.executable, "-c", "import graphbuild; print(graphbuild.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = Path(done.stdout.strip()).resolve()
    assert found == ROOT / "graphbuild" / "__init__.py", (
        f"`python -m graphbuild` runs {found}, not this checkout: pip install -e ."
    )


def test_bootstrap_without_sudo_names_the_packages_and_the_command(tmp_path):
    """As a user without sudo, a missing package is one message and exit 2, not
    `sudo: command not found` (127)."""
    bin_dir = tmp_path / "bin"  # what need_debs uses, and no sudo, whatever this machine has
    bin_dir.mkdir()
    for tool in ("dpkg-query", "grep"):
        (bin_dir / tool).symlink_to(require(tool))
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (bin_dir / "id").chmod(0o755)
    script = (
        ". scripts/bootstrap.sh\nneed_debs dpkg graphbuild-no-such-package another-one\necho on"
    )
    done = subprocess.run(
        ["/bin/bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT, env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "command not found" not in done.stderr and "on" not in done.stdout.split()
    assert "graphbuild-no-such-package another-one" in done.stderr
    assert "dpkg" not in done.stderr  # installed: not asked for
    command = "apt-get install -y --no-install-recommends graphbuild-no-such-package another-one"
    assert command in done.stderr
