"""A stand-in Kubernetes API server for the real kubectl: no cluster can run in tests, so only
the server side of `kubectl get -o json`, `set image` and `rollout status` is played here.

It answers with the JSON the real API server gives: legacy discovery (kubectl asks for the
aggregated kind first, and falls back when the answer is plain application/json), objects,
strategic-merge patches merged the way the API server merges them (containers by name), and
the list + watch that `rollout status` waits on. The deployment controller is played too: it
acts on a new generation once somebody watches, so every rollout is seen through the watch,
with no sleep in any test.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.servers import _Quiet, _Server

Key = tuple[str, str, str, str]  # group/version, namespace ("" if cluster-wide), plural, name

# group/version -> (plural, kind, namespaced, short names), as the real discovery lists them
_RESOURCES: dict[str, list[tuple[str, str, bool, list[str]]]] = {
    "v1": [
        ("namespaces", "Namespace", False, ["ns"]),
        ("pods", "Pod", True, ["po"]),
        ("services", "Service", True, ["svc"]),
    ],
    "apps/v1": [
        ("daemonsets", "DaemonSet", True, ["ds"]),
        ("deployments", "Deployment", True, ["deploy"]),
        ("replicasets", "ReplicaSet", True, ["rs"]),
        ("statefulsets", "StatefulSet", True, ["sts"]),
    ],
    "batch/v1": [("jobs", "Job", True, [])],  # and CronJobs, at the version asked for
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_PATH_RE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
SMP = "application/strategic-merge-patch+json"
_MERGE_BY_NAME = {"containers", "initContainers"}  # patchMergeKey "name" in the Go types
_CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class Request:
    """One request kubectl sent, for tests to assert on."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: object  # parsed JSON, or None


class KubeAPI(_Server):
    """The API server; `add(manifest)` stores an object, `requests` is everything asked."""

    def __init__(self, stuck: Collection[str] = (), cronjobs: str = "batch/v1") -> None:
        super().__init__(_KubeHandler)
        self.stuck = set(stuck)  # names of deployments whose new pods never get ready
        # kubectl 1.20 cannot patch a batch/v1 CronJob; clusters of its day had batch/v1beta1
        self.resources = copy.deepcopy(_RESOURCES)
        self.resources.setdefault(cronjobs, []).append(("cronjobs", "CronJob", True, ["cj"]))
        self.objects: dict[Key, dict] = {}
        self.requests: list[Request] = []
        self.changed = threading.Condition()  # guards objects; notified on every write
        self.revision = 0  # the cluster's resourceVersion, counted as etcd counts
        self.stopping = False

    def stop(self) -> None:
        with self.changed:  # watches end, instead of waiting for their timeoutSeconds
            self.stopping = True
            self.changed.notify_all()
        super().stop()

    @property
    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    def add(self, manifest: dict) -> None:
        """Store an object as if created (in its namespace, created too); a Deployment comes
        with the status of a finished rollout."""
        obj = copy.deepcopy(manifest)
        version, meta = obj["apiVersion"], obj["metadata"]
        plural, _, namespaced = self.resource(version, kind=obj["kind"])
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_CREATED)
        if obj["kind"] == "Deployment":
            obj["status"] = _rolled_out(obj)
        with self.changed:
            if namespaced:
                namespace = meta.setdefault("namespace", "default")
                if ("v1", "", "namespaces", namespace) not in self.objects:
                    self.add({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": namespace},
                              "status": {"phase": "Active"}})  # fmt: skip
            self._write((version, meta.get("namespace", ""), plural, meta["name"]), obj)

    def get(self, key: Key) -> dict | None:
        """The object a GET answers with, or None."""
        with self.changed:
            return copy.deepcopy(self.objects.get(key))

    def patch(self, key: Key, patch: dict) -> dict | None:
        """Merge as the API server does: only a change is written, and a changed spec is a new
        generation (which the deployment controller has yet to observe)."""
        with self.changed:
            before = self.objects.get(key)
            if before is None:
                return None
            after = copy.deepcopy(before)
            _merge(after, patch)
            if after != before:
                if after.get("spec") != before.get("spec"):
                    after["metadata"]["generation"] += 1
                self._write(key, after)
            return copy.deepcopy(after)

    def kubeconfig(self, folder: Path, context: str = "fake", namespace: str = "default") -> Path:
        """A kubeconfig whose `context` (the current one) reaches this server, in `namespace`
        unless told otherwise."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{self.address}"}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": context,
        }
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def resource(
        self, version: str, plural: str | None = None, kind: str | None = None
    ) -> tuple[str, str, bool]:
        """(plural, kind, namespaced) of a resource the server serves, by plural or by kind."""
        for name, known, namespaced, _ in self.resources.get(version, []):
            if plural in (None, name) and kind in (None, known):
                return name, known, namespaced
        raise LookupError(f"{version} {plural or kind}")

    def discovery(self, path: str) -> dict | None:
        """/version and legacy discovery: APIVersions, APIGroupList, APIResourceList."""
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
        if path == "/api":
            address = {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [address]}  # fmt: skip
        if path == "/apis":
            groups: dict[str, list[dict]] = {}
            for version in self.resources:
                if "/" in version:
                    group, _, bare = version.partition("/")
                    found = {"groupVersion": version, "version": bare}
                    groups.setdefault(group, []).append(found)
            listed = [{"name": group, "versions": versions, "preferredVersion": versions[0]}
                      for group, versions in groups.items()]  # fmt: skip
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
        version = path.removeprefix("/api/").removeprefix("/apis/")
        if path in ("/api/v1", f"/apis/{version}") and version in self.resources:
            resources = [
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                 "kind": kind, "verbs": _VERBS, **({"shortNames": short} if short else {})}
                for plural, kind, namespaced, short in self.resources[version]
            ]  # fmt: skip
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version,
                    "resources": resources}  # fmt: skip
        return None

    def locate(self, path: str) -> tuple[str, str, str, str | None] | None:
        """The key an object path names (name None: the collection), if the server serves it
        there: a namespaced kind only inside a namespace, a cluster-wide one only outside."""
        match = _PATH_RE.match(path)
        if match is None:
            return None
        version = match["core"] or f"{match['group']}/{match['version']}"
        try:
            namespaced = self.resource(version, plural=match["plural"])[2]
        except LookupError:
            return None
        if namespaced != bool(match["namespace"]):
            return None
        return version, match["namespace"] or "", match["plural"], match["name"]

    def _write(self, key: Key, obj: dict) -> None:
        """Store under a new resourceVersion; the caller holds `changed`."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.objects[key] = obj
        self.changed.notify_all()

    def _observe(self, key: Key) -> None:
        """The deployment controller: a new generation rolls out, or (stuck) its pods never
        get ready. The caller holds `changed`."""
        obj = self.objects.get(key)
        if obj is None or obj["kind"] != "Deployment":
            return
        if obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
            return
        obj = copy.deepcopy(obj)
        obj["status"] = (_stuck if obj["metadata"]["name"] in self.stuck else _rolled_out)(obj)
        self._write(key, obj)


def _rolled_out(deployment: dict) -> dict:
    replicas = deployment["spec"].get("replicas", 1)
    return {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            _condition("Available", "MinimumReplicasAvailable"),
            _condition("Progressing", "NewReplicaSetAvailable"),
        ],
    }


def _stuck(deployment: dict) -> dict:
    """The new ReplicaSet's pods never start (ImagePullBackOff, say): none is updated, the
    old ones keep serving, and the progress deadline is not reached yet."""
    replicas = deployment["spec"].get("replicas", 1)
    return {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": 0,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            _condition("Available", "MinimumReplicasAvailable"),
            _condition("Progressing", "ReplicaSetUpdated"),
        ],
    }


def _condition(kind: str, reason: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason,
            "lastUpdateTime": _CREATED, "lastTransitionTime": _CREATED}  # fmt: skip


def _merge(target: dict, patch: dict) -> None:
    """A strategic-merge patch, as far as `kubectl set image` needs: maps merge, null deletes,
    containers merge by name; `$setElementOrder` names the order the list already has."""
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            continue
        current = target.get(key)
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif key in _MERGE_BY_NAME and isinstance(value, list) and isinstance(current, list):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(item)
        else:
            target[key] = value


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {},
            "code": code}  # fmt: skip


class _KubeHandler(_Quiet):
    def do_GET(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        server: KubeAPI = self.server.owner
        url = urlparse(self.path)
        query = parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type")
        body = json.loads(raw) if raw else None
        server.requests.append(Request(self.command, url.path, query, content_type, body))
        document = server.discovery(url.path) if self.command == "GET" else None
        if document is not None:
            self._json(200, document)
            return
        key = server.locate(url.path)
        if key is None:
            message = "the server could not find the requested resource"
            self._json(404, _status(404, "NotFound", message))
            return
        version, _, plural, name = key
        if name is None and self.command == "GET":
            (self._watch if query.get("watch") == ["true"] else self._list)(server, key, query)
            return
        if self.command == "PATCH" and content_type != SMP:
            message = f"the body of the request was in an unknown format: {content_type}"
            self._json(415, _status(415, "UnsupportedMediaType", message))
            return
        found = server.get(key) if self.command == "GET" else server.patch(key, body)
        if found is None:
            group = version.rpartition("/")[0]
            resource = f"{plural}.{group}" if group else plural
            details = {"name": name, "group": group, "kind": plural}
            message = f'{resource} "{name}" not found'
            self._json(404, _status(404, "NotFound", message, details))
            return
        self._json(200, found)

    def _list(self, server: KubeAPI, key: Key, query: dict) -> None:
        version, namespace, plural, _ = key
        name = _field_name(query)
        with server.changed:
            items = [
                copy.deepcopy(obj)
                for (v, ns, p, n), obj in sorted(server.objects.items())
                if (v, ns, p) == (version, namespace, plural) and name in (None, n)
            ]
            revision = str(server.revision)
        for item in items:  # the real server leaves them out of a list's items
            del item["kind"], item["apiVersion"]
        kind = server.resource(version, plural=plural)[1]
        self._json(200, {"kind": f"{kind}List", "apiVersion": version,
                         "metadata": {"resourceVersion": revision}, "items": items})  # fmt: skip

    def _watch(self, server: KubeAPI, key: Key, query: dict) -> None:
        """Stream each change after `resourceVersion` as a MODIFIED event, one JSON object a
        line, until `timeoutSeconds`, the client leaving, or the server stopping."""
        version, namespace, plural, _ = key
        watched = (version, namespace, plural, _field_name(query))
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", ["60"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()  # no Content-Length: HTTP/1.0, the stream ends when we close it
        self.wfile.flush()
        with server.changed:
            server._observe(watched)  # the controller acts once a rollout is waited for
        while True:
            with server.changed:
                obj = server.objects.get(watched)
                if obj is None or int(obj["metadata"]["resourceVersion"]) <= since:
                    left = deadline - time.monotonic()
                    if server.stopping or left <= 0:
                        return
                    server.changed.wait(min(left, 0.5))
                    continue
                since = int(obj["metadata"]["resourceVersion"])
                event = {"type": "MODIFIED", "object": copy.deepcopy(obj)}
            try:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()
            except OSError:  # kubectl has what it waited for, or gave up
                return

    def _json(self, status: int, document: dict) -> None:
        self.reply(status, json.dumps(document).encode(), {"Content-Type": "application/json"})


def _field_name(query: dict) -> str | None:
    """The name in `fieldSelector=metadata.name=web`, the only selector kubectl sends here."""
    selector = query.get("fieldSelector", [""])[0]
    return selector.removeprefix("metadata.name=") if selector else None


@pytest.fixture
def kube_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., KubeAPI]]:
    """`kube_api(stuck=..., cronjobs=...)` starts a KubeAPI, stopped after the test. kubectl's
    HOME (where it caches discovery) is the test's own folder, and no KUBECONFIG from outside
    reaches it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    started: list[KubeAPI] = []

    def start(stuck: Collection[str] = (), cronjobs: str = "batch/v1") -> KubeAPI:
        started.append(KubeAPI(stuck, cronjobs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
