"""deploy/: the Kubernetes manifests, checked structurally (no cluster needed).

``deploy/`` is ``deploy/base/`` as it is; ``deploy/overlays/spool-pvc/`` and
``deploy/overlays/embedded/`` are its variants (rendered with ``kubectl
kustomize``, checked at the end of this file). In the base, every Deployment
has probes on the endpoints the service really serves, resources, a hardened
securityContext, its own ServiceAccount and a PodDisruptionBudget; every RBAC
rule is in the per-service allow-list (exactly, no wildcards); every ConfigMap
key is a real, valid ``PUSHRELAY_*`` setting. What the RBAC allows on a real API
server is proven by tests/integration/test_deploy_rbac.py.
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
DEPLOY = ROOT / "deploy" / "base"
OVERLAYS = ROOT / "deploy" / "overlays"
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


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders (no cluster contacted)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True,
        timeout=60, env={**os.environ, "KUBECONFIG": os.devnull},
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl not installed")


def test_deploy_is_the_base() -> None:
    kustomization = yaml.safe_load((DEPLOY.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["base"]
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    assert sorted(p.name for p in OVERLAYS.iterdir()) == ["embedded", "spool-pvc"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    # Transformers would make `kubectl apply -k` differ from the plain files that the
    # tests check and apply; keep the base plain (overlays may add them).
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}


@needs_kubectl
@pytest.mark.parametrize("directory", [DEPLOY, DEPLOY.parent], ids=["base", "deploy"])
def test_kustomize_builds_the_same_objects(
    manifests: list[dict[str, Any]], directory: Path
) -> None:
    built = kustomize(directory)

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


# --- the ingress's spool (docs/bus.md, docs/deploy.md) ------------------------------------


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def volume_under(pod: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str]:
    """(volume name, mount path) of the mount that holds ``path``: the deepest one."""
    mounts = [m for m in c["volumeMounts"]
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume (the root filesystem is read-only)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert not mount.get("readOnly", False), mount
    return mount["name"], mount["mountPath"]


def test_ingress_spool_is_an_empty_dir_at_the_spool_dir(manifests: list[dict[str, Any]]) -> None:
    pod = deployment(manifests, "ingress")["spec"]["template"]["spec"]
    c = container(manifests, "ingress")
    spool = env_of(c)["PUSHRELAY_SPOOL_DIR"]
    name, _ = volume_under(pod, c, spool)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[name] and volumes[name]["emptyDir"]["sizeLimit"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The image sets the same directory (a run without these manifests spools there too).
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    assert f"ENV PUSHRELAY_SPOOL_DIR={spool}" in dockerfile
    for service in ("router", "refresher"):  # only the ingress spools
        assert "PUSHRELAY_SPOOL_DIR" not in env_of(container(manifests, service))
    assert "PUSHRELAY_SPOOL_DIR" not in config(manifests)


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in objects
            if m["kind"] in ("Deployment", "StatefulSet")}


def claim_templates(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}


@pytest.fixture(scope="module")
def spool_pvc() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    return kustomize(OVERLAYS / "spool-pvc")


def test_spool_pvc_makes_the_ingress_a_stateful_set_with_a_claim(
    manifests: list[dict[str, Any]], spool_pvc: list[dict[str, Any]]
) -> None:
    base, variant = workloads(manifests), workloads(spool_pvc)
    sts = variant["pushrelay-ingress"]
    assert sts["kind"] == "StatefulSet" and sts["apiVersion"] == "apps/v1"
    assert sts["spec"]["replicas"] == base["pushrelay-ingress"]["spec"]["replicas"]
    assert sts["spec"]["serviceName"] in of_kind(spool_pvc, "Service")
    assert "strategy" not in sts["spec"]
    # Claims outlive scale-down and deletion: they may hold unforwarded pushes.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain", "whenDeleted": "Retain"}
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    name, _ = volume_under(pod, c, env_of(c)["PUSHRELAY_SPOOL_DIR"])
    assert name in claim_templates(sts) and name not in {v["name"] for v in pod["volumes"]}
    assert claim_templates(sts)[name]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    # Everything else is the base's: the same container, and the other objects as they were.
    base_c = container(manifests, "ingress")
    assert {k: v for k, v in c.items() if k != "volumeMounts"} == {
        k: v for k, v in base_c.items() if k != "volumeMounts"}
    others = [m for m in spool_pvc if m["metadata"]["name"] != "pushrelay-ingress"
              or m["kind"] not in ("Deployment", "StatefulSet")]
    assert sorted(others, key=str) == sorted(
        [m for m in manifests if not (m["kind"] == "Deployment"
                                      and m["metadata"]["name"] == "pushrelay-ingress")],
        key=str)


# --- the embedded single-replica variant --------------------------------------------------

ALL_IN_ONE = "pushrelay-all-in-one"


@pytest.fixture(scope="module")
def embedded() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    return kustomize(OVERLAYS / "embedded")


def all_in_one(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The all-in-one StatefulSet and its one container."""
    sts = of_kind(objects, "StatefulSet")[ALL_IN_ONE]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return sts, c


def test_embedded_is_one_all_in_one_replica_and_nothing_else(
    embedded: list[dict[str, Any]]
) -> None:
    from pushrelay.cli.main import build_parser

    assert set(workloads(embedded)) == {ALL_IN_ONE}
    assert not of_kind(embedded, "PodDisruptionBudget")  # one replica: a budget blocks drains
    sts, c = all_in_one(embedded)
    assert sts["spec"]["replicas"] == 1
    assert c["args"] == ["all-in-one"] and "command" not in c
    assert build_parser().parse_args(c["args"]).func is not None
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for m in embedded:
        if m["kind"] not in CLUSTER_SCOPED:
            assert m["metadata"]["namespace"] == NAMESPACE, ident_of(m)
        assert m["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pushrelay"


def ident_of(m: dict[str, Any]) -> tuple[str, str]:
    return m["kind"], m["metadata"]["name"]


def test_embedded_settings_name_the_bus_and_a_data_dir_on_the_claim(
    embedded: list[dict[str, Any]]
) -> None:
    sts, c = all_in_one(embedded)
    data = config(embedded)
    env = {**data, **env_of(c)}
    assert env["PUSHRELAY_BUS"] == "embedded"
    assert not [k for k in env if k.startswith("PUSHRELAY_KAFKA_")]
    assert "PUSHRELAY_TOPIC_REPLICATION" not in env
    pod = sts["spec"]["template"]["spec"]
    name, mount = volume_under(pod, c, env["PUSHRELAY_DATA_DIR"])
    assert name in claim_templates(sts)
    assert env["PUSHRELAY_DATA_DIR"] != mount  # a directory of its own on the claim
    assert pod["securityContext"]["fsGroup"] == 10001
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    known = {f"PUSHRELAY_{field.upper()}" for field in Settings.model_fields}
    assert sorted(set(env) - known) == []
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PUSHRELAY_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings()
    assert settings.bus == "embedded" and settings.data_dir == env["PUSHRELAY_DATA_DIR"]


def test_embedded_probes_resources_and_hardening(embedded: list[dict[str, Any]]) -> None:
    sts, c = all_in_one(embedded)
    pod = sts["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    health = int(config(embedded)["PUSHRELAY_HEALTH_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path
        assert ports[c[probe]["httpGet"]["port"]] == health
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in c["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    shutdown = float(config(embedded)["PUSHRELAY_SHUTDOWN_TIMEOUT"])
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > shutdown + pre_stop


def test_embedded_service_exposes_only_the_receiver_port(embedded: list[dict[str, Any]]) -> None:
    sts, c = all_in_one(embedded)
    (svc,) = of_kind(embedded, "Service").values()
    assert svc["metadata"]["name"] == "pushrelay-ingress"  # as in the base: same Ingress/Gateway
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert "http" in {p["name"] for p in c["ports"]}


def test_embedded_account_has_exactly_the_union_of_the_three_roles(
    manifests: list[dict[str, Any]], embedded: list[dict[str, Any]]
) -> None:
    sts, _ = all_in_one(embedded)
    account = sts["spec"]["template"]["spec"]["serviceAccountName"]
    assert set(of_kind(embedded, "ServiceAccount")) == {account}
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    roles = of_kind(embedded, "ClusterRole")
    bound: set[tuple[str, str, str]] = set()
    for binding in of_kind(embedded, "ClusterRoleBinding").values():
        assert binding["subjects"] == [subject]
        bound |= granted(roles[binding["roleRef"]["name"]])
    assert bound == set().union(*ALLOWED.values())
    assert roles == of_kind(manifests, "ClusterRole")  # the base's files, unchanged
    policy = of_kind(embedded, "ValidatingAdmissionPolicy")["pushrelay-refresher-only-refreshes"]
    user = f"system:serviceaccount:{NAMESPACE}:{account}"
    assert [c["expression"].strip() for c in policy["spec"]["matchConditions"]] == [
        f'request.userInfo.username == "{user}"']
