"""A tiny synchronous client for the devstack's own set-up calls, and kubeconfigs.

The services use kubernetes-asyncio; the devstack only needs a handful of
requests (readiness, CRDs, a namespace) before anything async exists, so it
talks HTTPS with the standard library and the admin client certificate.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pushrelay.infra.kube.fields import items, mapping, text
from pushrelay_devstack.certs import Pki, issue_client
from pushrelay_devstack.errors import DevstackError

ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
CLUSTER_NAME = "pushrelay-devstack"


class KubeHTTP:
    def __init__(self, port: int, ca: Path, cert: Path, key: Path, timeout: float = 10) -> None:
        self.port = port
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))

    @classmethod
    def admin(cls, pki: Pki, port: int) -> KubeHTTP:
        return cls(port, pki.ca_cert, pki.client_cert(ADMIN_USER), pki.client_key(ADMIN_USER))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self._ctx, timeout=self.timeout
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, raw = self.request(method, path, body)
        try:
            return status, json.loads(raw) if raw else {}
        except ValueError:
            return status, {"raw": raw.decode("utf-8", "replace")}


def crd_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    folder = resources.files("pushrelay_devstack").joinpath("crds")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(entry.read_text()) if d)
    return docs


_CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
#: The label on the CRDs this project ships: only CRDs carrying it are updated.
MANAGED_BY = ("app.kubernetes.io/managed-by", "pushrelay-devstack")
#: What earlier versions of these CRDs carried instead (still ours).
_LEGACY_LABEL = ("app.kubernetes.io/part-of", "pushrelay-devstack")


def is_ours(crd: Any) -> bool:
    """Whether an installed CRD is one of ours (labelled), so ``up`` may replace it."""
    labels = mapping(crd, "metadata", "labels")
    return any(labels.get(key) == value for key, value in (MANAGED_BY, _LEGACY_LABEL))


def established(crd: Any) -> bool:
    """Whether a CRD's ``Established`` condition is ``True`` (``conditions`` may be null)."""
    return any(isinstance(c, Mapping) and c.get("type") == "Established"
               and c.get("status") == "True" for c in items(crd, "status", "conditions"))


def install_crds(client: KubeHTTP, timeout: float = 60,
                 progress: Callable[[str], None] | None = None) -> list[str]:
    """Create the project's CRDs, update those carrying our label, and wait until
    each is Established. A CRD of the same name without our label (Kargo's own,
    say) is left as it is, and ``progress`` says so."""
    names = []
    for crd in crd_documents():
        name = crd["metadata"]["name"]  # our own files: always named
        names.append(name)
        status, body = client.json("POST", _CRDS, crd)
        if status == 409:
            _, current = client.json("GET", f"{_CRDS}/{name}")
            if not is_ours(current):
                if progress is not None:
                    progress(f"CRD {name} is not ours (no {'='.join(MANAGED_BY)} label): "
                             "left as it is")
                continue
            version = text(current, "metadata", "resourceVersion")
            crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": version}}
            status, body = client.json("PUT", f"{_CRDS}/{name}", crd)
        if status not in (200, 201):
            raise DevstackError("crds", f"cannot install CRD {name}: HTTP {status} {body}")
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            _, body = client.json("GET", f"{_CRDS}/{name}")
            if established(body):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise DevstackError("crds", f"not Established after {timeout:.0f}s: {sorted(pending)}")
    return names


def ensure_namespace(client: KubeHTTP, name: str) -> None:
    status, body = client.json(
        "POST", "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    if status not in (201, 409):
        raise DevstackError("namespaces", f"cannot create namespace {name}: HTTP {status} {body}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, pki: Pki, port: int, user: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for ``user``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CLUSTER_NAME,
            "cluster": {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority-data": _b64(pki.ca_cert),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": _b64(pki.client_cert(user)),
                "client-key-data": _b64(pki.client_key(user)),
            },
        }],
        "contexts": [{"name": user, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": user,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def ensure_admin(pki: Pki) -> None:
    if not pki.client_cert(ADMIN_USER).exists():
        issue_client(pki, ADMIN_USER, ADMIN_GROUPS)
