"""deploy/: the Kubernetes manifests, checked structurally (no cluster needed).

Every Deployment has probes on the endpoints the service really serves, resources,
a hardened securityContext, its own ServiceAccount and a PodDisruptionBudget;
every RBAC rule is in the per-service allow-list (exactly, no wildcards); every
ConfigMap key is a real, valid ``PUSHRELAY_*`` setting. What the RBAC allows on a
real API server is proven by tests/integration/test_deploy_rbac.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pushrelay.infra.settings import Settings
from tests.rbac_expectations import ALLOWED, KARGO

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "pushrelay"
SERVICES = ("ingress", "router", "refresher")


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def load_manifests() -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k deploy/`` applies, in kustomization order."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        objects += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return objects


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return load_manifests()


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def deployment(manifests: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return of_kind(manifests, "Deployment")[f"pushrelay-{service}"]


def container(manifests: list[dict[str, Any]], service: str) -> dict[str, Any]:
    containers = deployment(manifests, service)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def config(manifests: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = of_kind(manifests, "ConfigMap")["pushrelay-config"]["data"]
    return data


# --- the set of files and objects ------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    # Transformers would make `kubectl apply -k` differ from the plain files that the
    # tests check and apply; keep the base plain (overlays may add them).
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_same_objects(manifests: list[dict[str, Any]]) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], check=True, capture_output=True, text=True,
        timeout=60, env={**os.environ, "KUBECONFIG": os.devnull},
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]

    def key(m: dict[str, Any]) -> tuple[str, str, str]:
        return (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"])

    assert sorted(built, key=key) == sorted(manifests, key=key)


def test_objects_are_well_formed_and_in_the_namespace(manifests: list[dict[str, Any]]) -> None:
    seen = set()
    for m in manifests:
        assert m.get("apiVersion") and m.get("kind") and m["metadata"].get("name"), m
        ident = (m["kind"], m["metadata"]["name"])
        assert ident not in seen, f"duplicate {ident}"
        seen.add(ident)
        if m["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in m["metadata"], ident
        else:
            assert m["metadata"]["namespace"] == NAMESPACE, ident
        assert m["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pushrelay", ident
    kinds = {m["kind"] for m in manifests}
    assert kinds == {"Namespace", "ConfigMap", "ServiceAccount", "ClusterRole",
                     "ClusterRoleBinding", "Deployment", "Service", "PodDisruptionBudget",
                     "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_namespace_enforces_restricted_pod_security(manifests: list[dict[str, Any]]) -> None:
    ns = of_kind(manifests, "Namespace")[NAMESPACE]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- Deployments ----------------------------------------------------------------------------


def test_one_deployment_per_service(manifests: list[dict[str, Any]]) -> None:
    assert set(of_kind(manifests, "Deployment")) == {f"pushrelay-{s}" for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_runs_the_service_under_its_own_account(
    manifests: list[dict[str, Any]], service: str
) -> None:
    from pushrelay.cli.main import build_parser

    pod = deployment(manifests, service)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"pushrelay-{service}"
    assert pod["serviceAccountName"] in of_kind(manifests, "ServiceAccount")
    assert pod.get("automountServiceAccountToken", True) is True
    c = container(manifests, service)
    assert c["args"] == [service]
    assert "command" not in c  # the image's ENTRYPOINT is `pushrelay`
    assert build_parser().parse_args(c["args"]).func is not None
    assert c["image"].split(":")[0] == "pushrelay"
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["pushrelay-config"]


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_selector_matches_its_pods(
    manifests: list[dict[str, Any]], service: str
) -> None:
    d = deployment(manifests, service)
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert d["spec"]["replicas"] >= 2


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_probes_hit_the_health_endpoints(
    manifests: list[dict[str, Any]], service: str
) -> None:
    c = container(manifests, service)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    settings = config(manifests)
    expected_port = int(settings["PUSHRELAY_HEALTH_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, (service, probe)
        assert ports[get["port"]] == expected_port, (service, probe)
        assert c[probe]["timeoutSeconds"] >= 1


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_has_resources(manifests: list[dict[str, Any]], service: str) -> None:
    resources = container(manifests, service)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_is_hardened(manifests: list[dict[str, Any]], service: str) -> None:
    pod = deployment(manifests, service)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container(manifests, service)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod and "hostPID" not in pod


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_leaves_time_for_a_graceful_shutdown(
    manifests: list[dict[str, Any]], service: str
) -> None:
    pod = deployment(manifests, service)["spec"]["template"]["spec"]
    shutdown = float(config(manifests)["PUSHRELAY_SHUTDOWN_TIMEOUT"])
    pre_stop = 0
    lifecycle = container(manifests, service).get("lifecycle", {})
    if "preStop" in lifecycle:
        pre_stop = int(lifecycle["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > shutdown + pre_stop


def test_image_user_matches_run_as_user(manifests: list[dict[str, Any]]) -> None:
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")][-1]
    uid, gid = (int(x) for x in user.split(":"))
    for service in SERVICES:
        sc = deployment(manifests, service)["spec"]["template"]["spec"]["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)


@pytest.mark.parametrize("service", SERVICES)
def test_every_deployment_has_a_pod_disruption_budget(
    manifests: list[dict[str, Any]], service: str
) -> None:
    pdb = of_kind(manifests, "PodDisruptionBudget")[f"pushrelay-{service}"]
    assert pdb["apiVersion"] == "policy/v1"
    labels = deployment(manifests, service)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    replicas = deployment(manifests, service)["spec"]["replicas"]
    # a budget that never allows an eviction would block node drains
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] < replicas
    else:
        assert pdb["spec"]["maxUnavailable"] >= 1


def test_ingress_service_targets_the_http_port(manifests: list[dict[str, Any]]) -> None:
    services = of_kind(manifests, "Service")
    assert set(services) == {"pushrelay-ingress"}
    svc = services["pushrelay-ingress"]
    labels = deployment(manifests, "ingress")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    names = {p["name"] for p in container(manifests, "ingress")["ports"]}
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert "http" in names


# --- settings -----------------------------------------------------------------------------


def test_configmap_keys_are_real_and_valid_settings(manifests: list[dict[str, Any]]) -> None:
    data = config(manifests)
    known = {f"PUSHRELAY_{field.upper()}" for field in Settings.model_fields}
    assert sorted(set(data) - known) == []
    assert all(isinstance(v, str) for v in data.values())
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PUSHRELAY_")]:
            mp.delenv(key)
        for key, value in data.items():
            mp.setenv(key, value)
        settings = Settings()
    assert settings.write_status is False  # Kargo's controller owns the status by default
    assert settings.ingress_port == 8080 and settings.health_port == 8081


# --- RBAC -----------------------------------------------------------------------------------


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    triples = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triples.add((group, resource, verb))
    return triples


def test_no_namespaced_roles_and_one_cluster_role_per_service(
    manifests: list[dict[str, Any]],
) -> None:
    assert not of_kind(manifests, "Role") and not of_kind(manifests, "RoleBinding")
    assert set(of_kind(manifests, "ClusterRole")) == {f"pushrelay-{s}" for s in SERVICES}
    assert set(of_kind(manifests, "ServiceAccount")) == {f"pushrelay-{s}" for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_cluster_role_is_exactly_the_allow_list(
    manifests: list[dict[str, Any]], service: str
) -> None:
    role = of_kind(manifests, "ClusterRole")[f"pushrelay-{service}"]
    rules = granted(role)
    assert not any("*" in part for triple in rules for part in triple), "no wildcards"
    assert rules == ALLOWED[service]


@pytest.mark.parametrize("service", SERVICES)
def test_binding_gives_the_role_to_the_service_account_only(
    manifests: list[dict[str, Any]], service: str
) -> None:
    binding = of_kind(manifests, "ClusterRoleBinding")[f"pushrelay-{service}"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": f"pushrelay-{service}"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"pushrelay-{service}",
                                    "namespace": NAMESPACE}]


def test_only_the_ingress_may_read_secrets(manifests: list[dict[str, Any]]) -> None:
    for name, role in of_kind(manifests, "ClusterRole").items():
        reads = {v for g, r, v in granted(role) if g == "" and r == "secrets"}
        assert reads == ({"list", "watch"} if name == "pushrelay-ingress" else set()), name


def test_only_the_refresher_may_write_warehouses(manifests: list[dict[str, Any]]) -> None:
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    for name, role in of_kind(manifests, "ClusterRole").items():
        verbs = {v for g, r, v in granted(role) if g == KARGO and r == "warehouses"}
        assert bool(verbs & writes) == (name == "pushrelay-refresher"), name


def test_refresher_guard_binds_to_the_refresher_account(manifests: list[dict[str, Any]]) -> None:
    """The admission policy narrowing "patch warehouses" to the refresh annotation."""
    policy = of_kind(manifests, "ValidatingAdmissionPolicy")["pushrelay-refresher-only-refreshes"]
    binding = of_kind(manifests, "ValidatingAdmissionPolicyBinding")[
        "pushrelay-refresher-only-refreshes"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    user = f"system:serviceaccount:{NAMESPACE}:pushrelay-refresher"
    assert [c["expression"].strip() for c in policy["spec"]["matchConditions"]] == [
        f'request.userInfo.username == "{user}"']
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": [KARGO], "apiVersions": ["*"], "operations": ["UPDATE"],
                      "resources": ["warehouses"]}]
