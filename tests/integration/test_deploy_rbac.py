"""deploy/ on a real API server: server-side apply, and least privilege proven.

1. Every manifest of ``deploy/`` is applied with server-side apply
   (``application/apply-patch+yaml``, field manager ``pushrelay-test``); a second
   apply changes nothing; a Pod of every Deployment passes the API server's
   validation and the "restricted" Pod Security admission (dry run). The
   variants ``deploy/overlays/spool-pvc`` and ``deploy/overlays/embedded`` pass
   a server-side apply in dry run, and their Pods the same admission.
2. SubjectAccessReviews over a matrix of resources x verbs x namespaces show
   each ServiceAccount is allowed exactly its allow-list and nothing else.
3. Each ServiceAccount's real identity: a token from the TokenRequest API in a
   kubeconfig of its own; the calls the service makes succeed and the others
   are answered 403 by the server.
4. The three services run as separate processes, each with its own
   ServiceAccount's kubeconfig, and a Quay push refreshes the Warehouse.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra.kube.client import new_api_client, raw_request, request_json
from pushrelay.infra.kube.resources import REFRESH_ANNOTATION
from tests.integration.conftest import eventually
from tests.rbac_expectations import ALLOWED, KARGO
from tests.unit.test_deploy import OVERLAYS, kustomize

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "base"
NS = "pushrelay"
FIELD_MANAGER = "pushrelay-test"
SERVICES = ("ingress", "router", "refresher")

KARGO_API = f"/apis/{KARGO}/v1alpha1"
CLUSTER_SECRETS_NS = "kargo-system-resources"


# What the SubjectAccessReview matrix asks about: (group, resource, namespaced).
MATRIX_RESOURCES = [
    (KARGO, "warehouses", True), (KARGO, "warehouses/status", True),
    (KARGO, "projectconfigs", True), (KARGO, "projectconfigs/status", True),
    (KARGO, "clusterconfigs", False), (KARGO, "clusterconfigs/status", False),
    (KARGO, "stages", True), (KARGO, "freights", True),
    ("", "secrets", True), ("", "configmaps", True), ("", "pods", True),
    ("", "events", True), ("events.k8s.io", "events", True),
    ("", "serviceaccounts/token", True), ("", "namespaces", False),
    ("rbac.authorization.k8s.io", "clusterroles", False),
    ("rbac.authorization.k8s.io", "clusterrolebindings", False),
    ("apps", "deployments", True),
]
MATRIX_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete",
                "deletecollection")
# Verbs that let a subject escalate; nobody here may use them on anything.
ESCALATIONS = [
    ("", "users", "impersonate", False), ("", "groups", "impersonate", False),
    ("", "serviceaccounts", "impersonate", True),
    ("rbac.authorization.k8s.io", "clusterroles", "bind", False),
    ("rbac.authorization.k8s.io", "clusterroles", "escalate", False),
]

_KINDS = {  # kind -> (apiVersion, plural, namespaced)
    "Namespace": ("v1", "namespaces", False),
    "ConfigMap": ("v1", "configmaps", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Service": ("v1", "services", True),
    "Deployment": ("apps/v1", "deployments", True),
    "StatefulSet": ("apps/v1", "statefulsets", True),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "ValidatingAdmissionPolicy": ("admissionregistration.k8s.io/v1",
                                  "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("admissionregistration.k8s.io/v1",
                                         "validatingadmissionpolicybindings", False),
}


def load_manifests() -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k deploy/`` applies, in kustomization order."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return objects


def object_path(obj: dict[str, Any]) -> str:
    api_version, plural, namespaced = _KINDS[obj["kind"]]
    assert obj["apiVersion"] == api_version, obj["kind"]
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespaced:
        base += f"/namespaces/{obj['metadata']['namespace']}"
    return f"{base}/{plural}/{obj['metadata']['name']}"


# The apply patch goes out as YAML bytes. (kubernetes_asyncio json.dumps() any body
# sent as exactly "application/apply-patch+yaml"; with a media-type parameter it
# passes bytes through, and the API server ignores the parameter.)
APPLY_YAML = "application/apply-patch+yaml; charset=utf-8"


async def server_side_apply(api: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    status, body = await call(
        api, "PATCH", object_path(obj), body=yaml.safe_dump(obj).encode(),
        content_type=APPLY_YAML, query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
    )
    assert status in (200, 201), (obj["kind"], obj["metadata"]["name"], status, body)
    assert isinstance(body, dict)
    return body


async def call(
    api: ApiClient, method: str, path: str, *, body: Any = None,
    content_type: str = "application/json", query: list[tuple[str, Any]] | None = None,
) -> tuple[int, Any]:
    """One raw API call: (HTTP status, decoded body or raw text). Never raises on status."""
    status, raw, _ = await raw_request(api, method, path, body=body, content_type=content_type,
                                       query=query, request_timeout=30)
    try:
        return status, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return status, raw.decode(errors="replace")


def sa_user(service: str) -> str:
    return f"system:serviceaccount:{NS}:pushrelay-{service}"


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def deployed(kube: ApiClient) -> list[dict[str, Any]]:
    """deploy/ applied server-side (idempotent: reruns and other tests reuse it).

    The objects are left in place on purpose: applying again is a no-op, and
    deleting the namespace would race with a concurrent run applying into it.
    """
    applied = []
    for obj in load_manifests():
        applied.append(await server_side_apply(kube, obj))
    return applied


@pytest.fixture(scope="module")
def admin_kubeconfig(devstack_env: dict[str, str]) -> dict[str, Any]:
    path = Path(devstack_env["KUBECONFIG"])
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    for entry in config.get("clusters", []):
        cluster = entry["cluster"]
        ca = cluster.get("certificate-authority")
        if ca and not os.path.isabs(ca):
            cluster["certificate-authority"] = str((path.parent / ca).resolve())
    return config


async def mint_token(kube: ApiClient, service: str, seconds: int = 3600) -> str:
    response = await request_json(
        kube, "POST", f"/api/v1/namespaces/{NS}/serviceaccounts/pushrelay-{service}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": seconds}},
    )
    token: str = response["status"]["token"]
    return token


def token_kubeconfig(admin: dict[str, Any], user: str, token: str, path: Path) -> Path:
    """A kubeconfig with the admin's cluster (server, CA) and a bearer token as the user."""
    current = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [copy.deepcopy(cluster)],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
async def sa_kubeconfigs(
    deployed: list[dict[str, Any]], kube: ApiClient, admin_kubeconfig: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("sa-kubeconfigs")
    return {
        service: token_kubeconfig(
            admin_kubeconfig, f"pushrelay-{service}", await mint_token(kube, service),
            directory / f"{service}.kubeconfig",
        )
        for service in SERVICES
    }


@pytest.fixture(scope="module")
async def sa_clients(sa_kubeconfigs: dict[str, Path]) -> AsyncIterator[dict[str, ApiClient]]:
    clients = {s: await new_api_client(str(p)) for s, p in sa_kubeconfigs.items()}
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


@dataclass
class Project:
    namespace: str
    secret: str
    receiver: str
    secret_value: str
    warehouse: str
    repo: str

    @property
    def receiver_hash(self) -> str:
        return hashlib.sha256(
            (self.namespace + self.receiver + self.secret_value).encode()
        ).hexdigest()


@pytest.fixture
async def project(kube: ApiClient, namespace: str) -> Project:
    """A Kargo-like project: a receiver Secret, a ProjectConfig and a Warehouse."""
    p = Project(namespace=namespace, secret="quay-receiver", receiver="quay",
                secret_value=uuid.uuid4().hex, warehouse="app",
                repo=f"quay.io/pushrelay-test/{namespace}")
    await request_json(kube, "POST", f"/api/v1/namespaces/{namespace}/secrets", body={
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": p.secret, "namespace": namespace},
        "stringData": {"secret": p.secret_value},
    })
    await request_json(kube, "POST", f"{KARGO_API}/namespaces/{namespace}/projectconfigs", body={
        "apiVersion": f"{KARGO}/v1alpha1", "kind": "ProjectConfig",
        "metadata": {"name": namespace, "namespace": namespace},
        "spec": {"webhookReceivers": [{"name": p.receiver,
                                       "quay": {"secretRef": {"name": p.secret}}}]},
    })
    await request_json(kube, "POST", f"{KARGO_API}/namespaces/{namespace}/warehouses", body={
        "apiVersion": f"{KARGO}/v1alpha1", "kind": "Warehouse",
        "metadata": {"name": p.warehouse, "namespace": namespace},
        "spec": {"subscriptions": [{"image": {
            "repoURL": p.repo, "imageSelectionStrategy": "Lexical"}}]},
    })
    return p


# --- 1. server-side apply ------------------------------------------------------------------


async def test_manifests_apply_server_side(
    deployed: list[dict[str, Any]], kube: ApiClient
) -> None:
    manifests = load_manifests()
    assert [(o["kind"], o["metadata"]["name"]) for o in deployed] == [
        (o["kind"], o["metadata"]["name"]) for o in manifests]
    for obj in deployed:
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        assert (FIELD_MANAGER, "Apply") in managers, obj["metadata"]["name"]
    # Applying again is a no-op: nothing in the manifests fights server defaults.
    for before, obj in zip(deployed, manifests, strict=True):
        after = await server_side_apply(kube, obj)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            obj["kind"], obj["metadata"]["name"])


async def test_pods_pass_validation_and_restricted_pod_security(
    deployed: list[dict[str, Any]], kube: ApiClient
) -> None:
    """Dry-run a Pod from every Deployment's template in the (restricted) namespace."""
    path = f"/api/v1/namespaces/{NS}/pods"
    for obj in load_manifests():
        if obj["kind"] != "Deployment":
            continue
        template = obj["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": obj["metadata"]["name"] + "-",
                            "labels": template["metadata"]["labels"]},
               "spec": template["spec"]}
        status, body = await call(kube, "POST", path, body=pod, query=[("dryRun", "All")])
        assert status == 201, (obj["metadata"]["name"], body)
    # Control: the same Pod without its hardening is refused, so the check above
    # really ran against the namespace's "restricted" policy.
    weak = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "weak-"},
            "spec": {"containers": [{"name": "c", "image": "pushrelay:latest"}]}}
    status, body = await call(kube, "POST", path, body=weak, query=[("dryRun", "All")])
    assert status == 403 and "PodSecurity" in str(body), body


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The Pod a Deployment's or StatefulSet's controller would create (a StatefulSet's
    with a volume per claim template, as its controller adds them)."""
    template = copy.deepcopy(workload["spec"]["template"])
    name = workload["metadata"]["name"]
    template["spec"]["volumes"] = template["spec"].get("volumes", []) + [
        {"name": t["metadata"]["name"],
         "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}-0"}}
        for t in workload["spec"].get("volumeClaimTemplates", [])]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{name}-", "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("variant", ["spool-pvc", "embedded"])
async def test_variant_passes_a_server_side_dry_run(
    deployed: list[dict[str, Any]], kube: ApiClient, variant: str
) -> None:
    """deploy/overlays/<variant>: every object accepted by a server-side apply in dry
    run (strict field validation; nothing is changed: the base stays applied), and
    a Pod of every workload admitted under the namespace's "restricted" policy."""
    objects = kustomize(OVERLAYS / variant)
    for obj in objects:
        status, body = await call(
            kube, "PATCH", object_path(obj), body=yaml.safe_dump(obj).encode(),
            content_type=APPLY_YAML, query=[("fieldManager", FIELD_MANAGER), ("force", "true"),
                                            ("dryRun", "All"), ("fieldValidation", "Strict")])
        assert status in (200, 201), (obj["kind"], obj["metadata"]["name"], status, body)
    # A Pod's admission needs its ServiceAccount to exist: the all-in-one's is made
    # for real (an account with no binding of its own; the bindings stayed dry).
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        await server_side_apply(kube, account)
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            status, body = await call(kube, "POST", f"/api/v1/namespaces/{NS}/pods",
                                      body=pod_of(obj), query=[("dryRun", "All")])
            assert status == 201, (obj["metadata"]["name"], body)


# --- 2. SubjectAccessReview: exactly the allow-list --------------------------------------


async def access_review(
    kube: ApiClient, service: str, group: str, resource: str, verb: str, namespace: str
) -> bool:
    plural, _, sub = resource.partition("/")
    attrs: dict[str, Any] = {"group": group, "resource": plural, "verb": verb}
    if sub:
        attrs["subresource"] = sub
    if namespace:
        attrs["namespace"] = namespace
    review = await request_json(
        kube, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": sa_user(service),
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NS}",
                                  "system:authenticated"],
                       "resourceAttributes": attrs}},
    )
    return bool(review["status"].get("allowed"))


@pytest.mark.parametrize("service", SERVICES)
async def test_service_account_may_do_exactly_its_allow_list(
    deployed: list[dict[str, Any]], kube: ApiClient, namespace: str, service: str
) -> None:
    checks = []
    for group, resource, namespaced in MATRIX_RESOURCES:
        scopes = ["", namespace, CLUSTER_SECRETS_NS, NS] if namespaced else [""]
        for verb in MATRIX_VERBS:
            for scope in scopes:
                checks.append((group, resource, verb, scope))
    for group, resource, verb, namespaced in ESCALATIONS:
        checks.append((group, resource, verb, namespace if namespaced else ""))
    limit = asyncio.Semaphore(16)

    async def review(check: tuple[str, str, str, str]) -> bool:
        async with limit:
            return await access_review(kube, service, *check)

    answers = await asyncio.gather(*(review(c) for c in checks))
    allowed = {c for c, ok in zip(checks, answers, strict=True) if ok}
    expected = {c for c in checks if c[:3] in ALLOWED[service]}
    assert allowed == expected, (
        f"unexpectedly allowed: {sorted(allowed - expected)}; "
        f"unexpectedly denied: {sorted(expected - allowed)}")
    # every allowed permission was asked about (the matrix covers the allow-list)
    assert {c[:3] for c in checks} >= ALLOWED[service]


# --- 3. the real identities: tokens from the TokenRequest API ------------------------------


def event_body(namespace: str, involved: dict[str, Any], component: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:12]}",
                         "namespace": namespace},
            "involvedObject": involved, "reason": "RBACTest", "message": "rbac test",
            "type": "Normal", "source": {"component": component}, "count": 1}


async def assert_event_writes(api: ApiClient, namespace: str, involved: dict[str, Any],
                              component: str) -> None:
    body = event_body(namespace, involved, component)
    status, created = await call(api, "POST", f"/api/v1/namespaces/{namespace}/events",
                                 body=body)
    assert status == 201, created
    path = f"/api/v1/namespaces/{namespace}/events/{body['metadata']['name']}"
    status, _ = await call(api, "PATCH", path, body={"count": 2},
                           content_type="application/merge-patch+json")
    assert status == 200
    status, _ = await call(api, "GET", path)
    assert status == 403, "events are write-only for pushrelay"
    status, _ = await call(api, "DELETE", path)
    assert status == 403


@pytest.mark.parametrize("service", SERVICES)
async def test_token_identity_is_the_service_account(
    sa_clients: dict[str, ApiClient], service: str
) -> None:
    status, review = await call(
        sa_clients[service], "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert status == 201, review
    user = review["status"]["userInfo"]
    assert user["username"] == sa_user(service)
    assert f"system:serviceaccounts:{NS}" in user["groups"]


async def test_ingress_identity(
    sa_clients: dict[str, ApiClient], project: Project
) -> None:
    api, ns = sa_clients["ingress"], project.namespace
    watch = [("watch", "true"), ("timeoutSeconds", "1")]
    ok = [
        ("GET", f"{KARGO_API}/projectconfigs", None),
        ("GET", f"{KARGO_API}/projectconfigs", watch),
        ("GET", f"{KARGO_API}/namespaces/{ns}/projectconfigs", None),
        ("GET", f"{KARGO_API}/clusterconfigs", None),
        ("GET", f"{KARGO_API}/clusterconfigs", watch),
        ("GET", "/api/v1/secrets", None),
        ("GET", "/api/v1/secrets", watch),
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("GET", f"/api/v1/namespaces/{CLUSTER_SECRETS_NS}/secrets", None),
    ]
    for method, path, query in ok:
        status, body = await call(api, method, path, query=query)
        assert status == 200, (path, query, body)
    listed = await call(api, "GET", f"/api/v1/namespaces/{ns}/secrets")
    assert project.secret in {s["metadata"]["name"] for s in listed[1]["items"]}
    # a ClusterConfig by name: absent (404) here, but not forbidden
    status, _ = await call(api, "GET", f"{KARGO_API}/clusterconfigs/cluster")
    assert status in (200, 404)
    # status.webhookReceivers is writable, the rest of the ProjectConfig is not
    status, body = await call(
        api, "PATCH", f"{KARGO_API}/namespaces/{ns}/projectconfigs/{ns}/status",
        body={"status": {"webhookReceivers": [{"name": project.receiver, "path": "/quay/x",
                                               "url": "http://localhost/quay/x"}]}},
        content_type="application/merge-patch+json")
    assert status == 200, body
    forbidden: list[tuple[str, str, Any]] = [
        ("GET", f"/api/v1/namespaces/{ns}/secrets/{project.secret}", None),
        ("GET", f"{KARGO_API}/namespaces/{ns}/projectconfigs/{ns}", None),
        ("PATCH", f"{KARGO_API}/namespaces/{ns}/projectconfigs/{ns}", {"spec": {}}),
        ("GET", f"{KARGO_API}/warehouses", None),
        ("PATCH", f"{KARGO_API}/namespaces/{ns}/warehouses/{project.warehouse}",
         {"metadata": {"annotations": {REFRESH_ANNOTATION: "ingress"}}}),
        ("GET", f"/api/v1/namespaces/{ns}/configmaps", None),
        ("POST", f"/api/v1/namespaces/{ns}/secrets",
         {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
    ]
    for method, path, body in forbidden:
        status, answer = await call(api, method, path, body=body,
                                    content_type="application/merge-patch+json"
                                    if method == "PATCH" else "application/json")
        assert status == 403, (method, path, answer)
    await assert_event_writes(api, ns, {
        "apiVersion": f"{KARGO}/v1alpha1", "kind": "ProjectConfig", "namespace": ns,
        "name": ns}, "pushrelay-ingress")


async def test_router_identity(sa_clients: dict[str, ApiClient], project: Project) -> None:
    api, ns = sa_clients["router"], project.namespace
    status, body = await call(api, "GET", f"{KARGO_API}/warehouses")
    assert status == 200, body
    assert (ns, project.warehouse) in {
        (w["metadata"]["namespace"], w["metadata"]["name"]) for w in body["items"]}
    status, _ = await call(api, "GET", f"{KARGO_API}/warehouses",
                           query=[("watch", "true"), ("timeoutSeconds", "1")])
    assert status == 200
    forbidden: list[tuple[str, str, Any]] = [
        ("GET", f"{KARGO_API}/namespaces/{ns}/warehouses/{project.warehouse}", None),
        ("PATCH", f"{KARGO_API}/namespaces/{ns}/warehouses/{project.warehouse}",
         {"metadata": {"annotations": {REFRESH_ANNOTATION: "router"}}}),
        ("GET", "/api/v1/secrets", None),
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("GET", f"{KARGO_API}/projectconfigs", None),
        ("GET", f"{KARGO_API}/clusterconfigs", None),
    ]
    for method, path, body in forbidden:
        status, answer = await call(api, method, path, body=body,
                                    content_type="application/merge-patch+json")
        assert status == 403, (method, path, answer)
    await assert_event_writes(api, ns, {
        "apiVersion": f"{KARGO}/v1alpha1", "kind": "Warehouse", "namespace": ns,
        "name": project.warehouse}, "pushrelay-router")


async def test_refresher_identity(
    sa_clients: dict[str, ApiClient], kube: ApiClient, project: Project
) -> None:
    api, ns = sa_clients["refresher"], project.namespace
    path = f"{KARGO_API}/namespaces/{ns}/warehouses/{project.warehouse}"
    value = f"rbac-test-{uuid.uuid4().hex[:8]}"
    status, body = await call(api, "PATCH", path,
                              body={"metadata": {"annotations": {REFRESH_ANNOTATION: value}}},
                              content_type="application/merge-patch+json")
    assert status == 200, body
    warehouse = await request_json(kube, "GET", path)
    assert warehouse["metadata"]["annotations"][REFRESH_ANNOTATION] == value
    forbidden: list[tuple[str, str, Any]] = [
        ("GET", path, None),
        ("GET", f"{KARGO_API}/warehouses", None),
        ("GET", f"{KARGO_API}/namespaces/{ns}/warehouses", None),
        ("PATCH", path + "/status", {"status": {}}),
        ("DELETE", path, None),
        ("GET", "/api/v1/secrets", None),
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("GET", f"{KARGO_API}/projectconfigs", None),
        ("PATCH", f"{KARGO_API}/namespaces/{ns}/projectconfigs/{ns}/status", {"status": {}}),
    ]
    for method, fpath, body in forbidden:
        status, answer = await call(api, method, fpath, body=body,
                                    content_type="application/merge-patch+json")
        assert status == 403, (method, fpath, answer)
    await assert_event_writes(api, ns, {
        "apiVersion": f"{KARGO}/v1alpha1", "kind": "Warehouse", "namespace": ns,
        "name": project.warehouse}, "pushrelay-refresher")


async def test_refresher_may_change_only_the_refresh_annotation(
    deployed: list[dict[str, Any]], sa_clients: dict[str, ApiClient], kube: ApiClient,
    project: Project,
) -> None:
    """RBAC allows any patch; deploy/base/refresher-guard.yaml narrows it to one annotation."""
    api, ns = sa_clients["refresher"], project.namespace
    path = f"{KARGO_API}/namespaces/{ns}/warehouses/{project.warehouse}"
    merge = "application/merge-patch+json"
    tampering: list[dict[str, Any]] = [
        {"spec": {"subscriptions": []}},
        {"metadata": {"labels": {"owned-by": "pushrelay"}}},
        {"metadata": {"annotations": {"example.com/other": "x"}}},
        {"metadata": {"finalizers": ["example.com/block"]}},
    ]
    for patch in tampering:
        async def denied(patch: dict[str, Any] = patch) -> Any:
            # the policy becomes active a moment after it is created
            status, body = await call(api, "PATCH", path, body=patch, content_type=merge)
            return body if status == 403 else None

        body = await eventually(denied, within=15, interval=0.5)
        assert "pushrelay refresher may" in str(body), body
    status, body = await call(
        api, "PATCH", path, content_type=merge,
        body={"metadata": {"annotations": {REFRESH_ANNOTATION: uuid.uuid4().hex}}})
    assert status == 200, body
    # the Warehouse is as it was, apart from the refresh annotation
    warehouse = await request_json(kube, "GET", path)
    assert warehouse["spec"]["subscriptions"] and not warehouse["metadata"].get("labels")
    assert set(warehouse["metadata"].get("annotations", {})) == {REFRESH_ANNOTATION}
    # and the policy binds to the refresher only: an admin may still edit labels
    status, body = await call(kube, "PATCH", path, content_type=merge,
                              body={"metadata": {"labels": {"team": "a"}}})
    assert status == 200, body


# --- 4. the services themselves, each under its own ServiceAccount ---------------------------


def _services_available() -> bool:
    return all(importlib.util.find_spec(f"{s}.service") is not None for s in SERVICES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int  # where requests go (the ingress's public port)
    health_port: int  # /readyz

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def run_service(
    devstack_env: dict[str, str], tmp_path: Path
) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(name: str, kubeconfig: Path, prefix: str, **extra: str) -> Proc:
        port = free_port()
        health_port = free_port() if name == "ingress" else port
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHRELAY_")}
        env.update({
            "KUBECONFIG": str(kubeconfig),
            "PUSHRELAY_KAFKA_BOOTSTRAP": devstack_env["PUSHRELAY_KAFKA_BOOTSTRAP"],
            "PUSHRELAY_TOPIC_PREFIX": prefix,
            "PUSHRELAY_TOPIC_PARTITIONS": "3",
            "PUSHRELAY_ROUTER_GROUP": f"{prefix}router",
            "PUSHRELAY_REFRESHER_GROUP": f"{prefix}refresher",
            "PUSHRELAY_LOG_FORMAT": "text",
            "PUSHRELAY_LOG_LEVEL": "DEBUG",
            "PUSHRELAY_INGRESS_HOST": "127.0.0.1",
            "PUSHRELAY_HEALTH_HOST": "127.0.0.1",
            "PUSHRELAY_INGRESS_PORT": str(port),
            "PUSHRELAY_HEALTH_PORT": str(health_port),
            **extra,
        })
        log = tmp_path / f"{name}.log"
        with log.open("wb") as fh:
            popen = subprocess.Popen([sys.executable, "-m", name], env=env, cwd=ROOT,
                                     stdout=fh, stderr=subprocess.STDOUT)
        proc = Proc(name, popen, log, port, health_port)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()


async def http_status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


@pytest.mark.skipif(not _services_available(), reason="the service packages are not built yet")
async def test_services_run_under_their_own_service_accounts(
    kube: ApiClient, sa_kubeconfigs: dict[str, Path], project: Project, run_service: Any,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    procs = {
        "ingress": run_service("ingress", sa_kubeconfigs["ingress"], prefix,
                               PUSHRELAY_WRITE_STATUS="true",
                               PUSHRELAY_BASE_URL="http://127.0.0.1:8080"),
        "router": run_service("router", sa_kubeconfigs["router"], prefix),
        "refresher": run_service("refresher", sa_kubeconfigs["refresher"], prefix,
                                 PUSHRELAY_REFRESH_MIN_INTERVAL="0.2"),
    }

    def logs() -> str:
        return "\n".join(f"--- {p.name} (exit {p.popen.poll()})\n{p.output()}"
                         for p in procs.values())

    async with aiohttp.ClientSession() as session:
        for proc in procs.values():
            url = f"http://127.0.0.1:{proc.health_port}/readyz"

            async def ready(url: str = url, proc: Proc = proc) -> bool:
                assert proc.popen.poll() is None, f"{proc.name} exited\n{logs()}"
                return await http_status(session, url) == 200

            try:
                await eventually(ready, within=60, interval=0.25)
            except TimeoutError:
                pytest.fail(f"{proc.name} never became ready\n{logs()}")

        # the ingress wrote the receiver status under its own identity
        pc_path = f"{KARGO_API}/namespaces/{project.namespace}/projectconfigs/{project.namespace}"

        async def status_written() -> bool:
            pc = await request_json(kube, "GET", pc_path)
            paths = [r.get("path") for r in pc.get("status", {}).get("webhookReceivers", [])]
            return f"/quay/{project.receiver_hash}" in paths

        try:
            await eventually(status_written, within=20)
        except TimeoutError:
            pytest.fail(f"ProjectConfig status not written\n{logs()}")

        wh_path = f"{KARGO_API}/namespaces/{project.namespace}/warehouses/{project.warehouse}"
        before = (await request_json(kube, "GET", wh_path))["metadata"].get(
            "annotations", {}).get(REFRESH_ANNOTATION)
        owner, _, name = project.repo.removeprefix("quay.io/").partition("/")
        payload = {"name": name, "repository": f"{owner}/{name}", "namespace": owner,
                   "docker_url": project.repo,
                   "homepage": f"https://quay.io/repository/{owner}/{name}",
                   "updated_tags": ["1.0.0"]}
        url = f"http://127.0.0.1:{procs['ingress'].port}/quay/{project.receiver_hash}"
        async with session.post(url, json=payload) as response:
            assert response.status == 202, (await response.text(), logs())

        async def refreshed() -> bool:
            wh = await request_json(kube, "GET", wh_path)
            value = wh["metadata"].get("annotations", {}).get(REFRESH_ANNOTATION)
            return value is not None and value != before

        try:
            await eventually(refreshed, within=30)
        except TimeoutError:
            pytest.fail(f"Warehouse not refreshed\n{logs()}")

    for proc in procs.values():
        assert proc.popen.poll() is None, f"{proc.name} died\n{logs()}"
        proc.popen.send_signal(signal.SIGTERM)
    for proc in procs.values():
        assert proc.popen.wait(timeout=40) == 0, f"{proc.name}: unclean exit\n{logs()}"
    # Nothing was denied along the way by RBAC or the refresher guard, not even a
    # best-effort call (those are logged at DEBUG). Other 403s can occur: Events
    # for objects in namespaces other tests are deleting ("being terminated").
    for proc in procs.values():
        text = proc.log.read_text(errors="replace")
        assert f'User "{sa_user(proc.name)}" cannot' not in text, logs()
        assert "pushrelay refresher may" not in text, logs()
