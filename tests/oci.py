"""A real registry for tests: Debian's docker-registry on a free loopback port, and real
OCI images (a gzipped tar layer, a config blob, a manifest) pushed to it over its API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, str]) -> tuple[bytes, bytes]:
    """(the gzipped blob, the tar it unpacks to) of a layer holding `files`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), raw.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRegistry:
    """A docker-registry process; `host` is `127.0.0.1:<port>`."""

    folder: Path
    auth: dict | None = None  # the `auth:` section of its config
    tls: dict | None = None  # `http.tls`: {certificate, key}; https instead of http
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    credentials: tuple[str, str] | None = None  # for pushing to an htpasswd registry
    sizes: dict[str, int] = field(default_factory=dict)  # manifest digest -> bytes pushed
    _http: httpx.Client | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "registry.log"

    def start(self) -> LocalRegistry:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.folder / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, **({"tls": self.tls} if self.tls else {})},
        }
        if self.auth:
            config["auth"] = self.auth
        (self.folder / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(self.folder / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(
                    f"http{'s' if self.tls else ''}://{self.host}/v2/", timeout=1, verify=False
                )
                # answered: by this registry, or by another process that took the port
                # between free_port() and the bind (pytest-xdist runs tests side by side)
                if "uri=/v2/" in self._log_since(start):
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                log = self._log_since(start)
                if "address already in use" in log:
                    self.port = free_port()  # lost the race for the port: another one
                    return self.start()
                raise RuntimeError(f"docker-registry exited: {log[-2000:]}") from None
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 20 s")

    def _log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def requests(self, pattern: str = r"/manifests/") -> int:
        """Reads (GET, HEAD) the registry served whose path matches `pattern`; pushes not."""
        line = re.compile(r'"(?:GET|HEAD) (\S+) HTTP')
        return sum(1 for m in line.finditer(self.log.read_text()) if re.search(pattern, m.group(1)))

    # -- pushing

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=f"http://{self.host}", auth=self.credentials, timeout=30
            )
        return self._http

    def blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        if self.http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        start = self.http.post(f"/v2/{repo}/blobs/uploads/")
        start.raise_for_status()
        url = httpx.URL(start.headers["location"]).copy_merge_params({"digest": digest})
        self.http.put(url, content=data).raise_for_status()
        return digest

    def manifest(self, repo: str, tag: str, body: dict, media_type: str) -> str:
        data = json.dumps(body).encode()
        headers = {"Content-Type": media_type}
        self.http.put(
            f"/v2/{repo}/manifests/{tag}", content=data, headers=headers
        ).raise_for_status()
        self.sizes[sha(data)] = len(data)
        return sha(data)

    def image(
        self,
        repo: str,
        tag: str,
        *,
        content: str = "hello",
        platform: str = "linux/amd64",
        annotations: dict | None = None,
        labels: dict | None = None,
        docker_format: bool = False,
    ) -> str:
        """Push a one-layer image; its layer holds `content`. Returns the manifest digest."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            payload = content.encode()
            info = tarfile.TarInfo("content.txt")
            info.size, info.mtime = len(payload), 0
            tar.addfile(info, io.BytesIO(payload))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        os_name, arch, *variant = platform.split("/")
        config = {
            "architecture": arch,
            "os": os_name,
            **({"variant": variant[0]} if variant else {}),
            "config": {"Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": [sha(raw.getvalue())]},
            "history": [{"created_by": "tests/oci.py: one layer"}],  # buildah checks it
        }
        config_data = json.dumps(config).encode()
        self.blob(repo, layer)
        self.blob(repo, config_data)
        if docker_format:
            kind = DOCKER_MANIFEST
            config_type = "application/vnd.docker.container.image.v1+json"
            layer_type = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        else:
            kind = OCI_MANIFEST
            config_type = "application/vnd.oci.image.config.v1+json"
            layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
        body = {
            "schemaVersion": 2,
            "mediaType": kind,
            "config": {
                "mediaType": config_type,
                "digest": sha(config_data),
                "size": len(config_data),
            },
            "layers": [{"mediaType": layer_type, "digest": sha(layer), "size": len(layer)}],
        }
        if annotations and not docker_format:
            body["annotations"] = annotations
        return self.manifest(repo, tag, body, kind)

    def layered(
        self,
        repo: str,
        tag: str | None,
        layers: list[dict[str, str]],
        platform: str = "linux/amd64",
    ) -> str:
        """Push an image whose layers (base first) hold those files (by digest when `tag` is
        None); its manifest digest. Layer i's diff id is `sha(layer(layers[i])[1])`."""
        blobs = [layer(files) for files in layers]
        os_name, arch = platform.split("/")
        config = json.dumps({
            "architecture": arch, "os": os_name, "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha(tar) for _, tar in blobs]},
            "history": [{"created_by": f"tests/oci.py: layer {n}"} for n in range(len(blobs))],
        }).encode()  # fmt: skip
        for blob, _ in blobs:
            self.blob(repo, blob)
        self.blob(repo, config)
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha(blob), "size": len(blob)} for blob, _ in blobs],
        }  # fmt: skip
        return self.manifest(repo, tag or sha(json.dumps(body).encode()), body, OCI_MANIFEST)

    def index(
        self, repo: str, tag: str, children: dict[str, str], *, attestation: bool = False
    ) -> str:
        """Push an OCI index of already pushed manifests ({platform: digest})."""
        entries = []
        for platform, digest in children.items():
            os_name, arch, *variant = platform.split("/")
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": self.sizes[digest],
                    "platform": {
                        "os": os_name,
                        "architecture": arch,
                        **({"variant": variant[0]} if variant else {}),
                    },
                }
            )
        if attestation:
            first = next(iter(children.values()))
            note = self.image(
                repo,
                f"att-{first[7:19]}",
                content=f"attestation of {first}",
                platform="unknown/unknown",
            )
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": note,
                    "size": self.sizes[note],
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": first,
                    },
                }
            )
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return self.manifest(repo, tag, body, OCI_INDEX)
