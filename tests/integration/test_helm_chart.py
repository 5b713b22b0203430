"""charts/pushrelay: helm lint, what helm template renders, and the API server's verdict.

1. ``helm lint --strict`` passes with the defaults and with every ``ci/*-values.yaml``
   (``everything-values.yaml`` switches on every optional part).
2. The defaults render what the kustomize base ``deploy/`` applies (the drift
   test): same kinds and names, same RBAC rules, settings, probes, ports,
   resources, securityContext, budgets and admission policy. The differences
   are the ones a Helm release implies and are listed in ``HELM_ONLY``. The
   same holds for the variants: ``ingress.spool.volume=pvc`` renders
   ``deploy/overlays/spool-pvc/``, ``bus=embedded`` ``deploy/overlays/embedded/``.
3. Values are checked: the schema and the templates refuse what would deploy
   something broken, with a message naming the value.
4. Every rendered object passes the API server's validation: a server-side dry
   run (``dryRun=All``, ``fieldValidation=Strict``) on the devstack, and a Pod
   from every Deployment passes the "restricted" Pod Security admission. The
   Prometheus Operator kinds are validated against minimal CRDs of ours
   (``tests/data/monitoring-crds.yaml``), installed where none exist.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from pushrelay.infra import metrics
from pushrelay.infra.kube.client import raw_request, request_json
from pushrelay.infra.settings import Settings
from tests.integration.conftest import eventually, temporary_namespace, unique
from tests.integration.helm_support import CHART, CI_VALUES, ROOT, Helm, helm
from tests.unit.test_deploy import OVERLAYS, kustomize, load_manifests, needs_kubectl

EVERYTHING = CHART / "ci" / "everything-values.yaml"
VALUE_SETS = {"defaults": None, **{p.name.removesuffix("-values.yaml"): p for p in CI_VALUES}}
MONITORING_CRDS = ROOT / "tests" / "data" / "monitoring-crds.yaml"

# What a release adds to deploy/'s objects, and what it leaves out.
RELEASE_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                  "app.kubernetes.io/version", "helm.sh/chart"}
HELM_ONLY = {
    # The release namespace is Helm's (`helm install -n NS --create-namespace`, or
    # made beforehand with the Pod Security labels: docs/deploy.md#helm).
    "kinds_not_rendered": {"Namespace"},
    # Labels of a release; selectors add app.kubernetes.io/instance.
    "labels": RELEASE_LABELS | {"app.kubernetes.io/component"},
    # A changed ConfigMap rolls the pods.
    "pod_annotations": {"checksum/config"},
}


@pytest.fixture(scope="module")
def chart_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return helm(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def defaults(chart_helm: Helm) -> list[dict[str, Any]]:
    return chart_helm.template()


@pytest.fixture(scope="module")
def everything(chart_helm: Helm) -> list[dict[str, Any]]:
    return chart_helm.template(EVERYTHING)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets, by name."""
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each workload's one container, by workload name."""
    found = {}
    for name, d in workloads(objects).items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        found[name] = c
    return found


# --- 1. helm lint ------------------------------------------------------------------------


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_helm_lint_strict(chart_helm: Helm, values: str) -> None:
    out = chart_helm.lint(VALUE_SETS[values])
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[ERROR]" not in out and "[WARNING]" not in out and "Fail:" not in out, out


def test_a_budget_switches_from_max_unavailable_to_min_available(chart_helm: Helm) -> None:
    objects = chart_helm.template({"router": {"pdb": {"minAvailable": 1,
                                                      "maxUnavailable": None}}})
    assert by_kind(objects, "PodDisruptionBudget")["pushrelay-router"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "pushrelay-router",
                                     "app.kubernetes.io/instance": "pushrelay"}}}


# --- 2. drift: the defaults are deploy/ -------------------------------------------------


def drift(base: Any, chart: Any, path: str = "") -> list[str]:
    """Where ``chart`` differs from ``base`` beyond what a Helm release adds.

    Labels and annotations of ``base`` must be in ``chart`` (which may add the
    release's); selectors must be ``base``'s plus the release's instance label;
    an image is compared without its tag (deploy/ says ``latest``, the chart its
    appVersion); everything else must be equal.
    """
    key = path.rsplit(".", 1)[-1]
    if key in ("labels", "annotations") and isinstance(base, dict):
        extra = set(chart) - set(base)
        allowed = HELM_ONLY["labels"] if key == "labels" else HELM_ONLY["pod_annotations"]
        problems = [f"{path}.{k}: {base[k]!r} != {chart.get(k)!r}"
                    for k in base if chart.get(k) != base[k]]
        return problems + [f"{path}.{k}: only in the chart" for k in sorted(extra - allowed)]
    if key in ("matchLabels", "selector") and isinstance(base, dict) and all(
            isinstance(v, str) for v in base.values()):
        wanted = {**base, "app.kubernetes.io/instance": "pushrelay"}
        return [] if chart == wanted else [f"{path}: {chart!r} != {wanted!r}"]
    if key == "image":
        return ([] if str(chart).split(":")[0] == str(base).split(":")[0]
                else [f"{path}: {chart!r} != {base!r}"])
    if isinstance(base, dict) and isinstance(chart, dict):
        problems = [f"{path}.{k}: only in deploy/" for k in base if k not in chart]
        problems += [f"{path}.{k}: only in the chart" for k in chart if k not in base]
        for k in base.keys() & chart.keys():
            problems += drift(base[k], chart[k], f"{path}.{k}")
        return problems
    if isinstance(base, list) and isinstance(chart, list) and len(base) == len(chart):
        return [p for i, (b, c) in enumerate(zip(base, chart, strict=True))
                for p in drift(b, c, f"{path}[{i}]")]
    return [] if base == chart else [f"{path}: {chart!r} != {base!r}"]


def ident(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def test_defaults_render_the_objects_of_deploy(defaults: list[dict[str, Any]]) -> None:
    base = {ident(o): o for o in load_manifests()
            if o["kind"] not in HELM_ONLY["kinds_not_rendered"]}
    chart = {ident(o): o for o in defaults}
    assert sorted(chart) == sorted(base)
    problems = [f"{kind}/{name}{p}" for (kind, name), obj in base.items()
                for p in drift(obj, chart[(kind, name)])]
    assert problems == [], "\n".join(problems)


VARIANTS = {
    "spool-pvc": {"ingress": {"spool": {"volume": "pvc"}}},
    "embedded": {"bus": "embedded"},
}


@needs_kubectl
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_values_render_the_objects_of_its_overlay(chart_helm: Helm, variant: str) -> None:
    base = {ident(o): o for o in kustomize(OVERLAYS / variant)
            if o["kind"] not in HELM_ONLY["kinds_not_rendered"]}
    chart = {ident(o): o for o in chart_helm.template(VARIANTS[variant])}
    assert sorted(chart) == sorted(base)
    problems = [f"{kind}/{name}{p}" for (kind, name), obj in base.items()
                for p in drift(obj, chart[(kind, name)])]
    assert problems == [], "\n".join(problems)


def test_embedded_needs_no_kafka_values_and_renders_none(chart_helm: Helm) -> None:
    objects = chart_helm.template({"bus": "embedded", "kafka": {
        "securityProtocol": "SASL_SSL", "sasl": {"existingSecret": "unused"},
        "tls": {"existingSecret": "unused"}}})
    (config,) = by_kind(objects, "ConfigMap").values()
    assert not [k for k in config["data"] if k.startswith("PUSHRELAY_KAFKA_")]
    (sts,) = workloads(objects).values()
    spec = sts["spec"]["template"]["spec"]
    assert "unused" not in str(spec)  # no Kafka Secret is mounted or read
    assert sts["spec"]["replicas"] == 1


def test_spool_can_be_switched_off(chart_helm: Helm) -> None:
    objects = chart_helm.template({"ingress": {"spool": {"enabled": False}}})
    c = containers(objects)["pushrelay-ingress"]
    assert {e["name"]: e["value"] for e in c["env"]}["PUSHRELAY_SPOOL_DIR"] == ""
    assert "spool" not in {m["name"] for m in c["volumeMounts"]}
    assert "StatefulSet" not in {o["kind"] for o in objects}


def test_drift_check_notices_a_difference(defaults: list[dict[str, Any]]) -> None:
    """Control: the comparison is not vacuous."""
    base = next(o for o in load_manifests() if o["kind"] == "ClusterRole")
    changed = copy.deepcopy(next(o for o in defaults if ident(o) == ident(base)))
    changed["rules"][0]["verbs"].append("get")
    changed["metadata"]["labels"]["team"] = "x"
    assert len(drift(base, changed)) == 2


def test_release_name_and_namespace_reach_every_reference(chart_helm: Helm) -> None:
    objects = chart_helm.template(release="blue", namespace="relay")
    names = {o["metadata"]["name"] for o in objects}
    assert all(n.startswith("blue-pushrelay-") for n in names), names
    for o in objects:
        assert o["metadata"].get("namespace", "relay") == "relay", ident(o)
    for binding in by_kind(objects, "ClusterRoleBinding").values():
        assert binding["subjects"][0]["namespace"] == "relay"
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
    (policy,) = by_kind(objects, "ValidatingAdmissionPolicy").values()
    assert ("system:serviceaccount:relay:blue-pushrelay-refresher"
            in policy["spec"]["matchConditions"][0]["expression"])
    (binding,) = by_kind(objects, "ValidatingAdmissionPolicyBinding").values()
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    for c in containers(objects).values():
        assert c["envFrom"][0]["configMapRef"]["name"] == "blue-pushrelay-config"


# --- settings ---------------------------------------------------------------------------


def settings_of(objects: list[dict[str, Any]], container: dict[str, Any],
                monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container would load: its ConfigMap and env (Secrets stubbed)."""
    env = dict(next(iter(by_kind(objects, "ConfigMap").values()))["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "from-a-secret")
    with monkeypatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PUSHRELAY_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        return Settings()


@pytest.mark.parametrize("values", ["defaults", "everything"])
def test_every_rendered_setting_is_real_and_valid(
    chart_helm: Helm, values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = chart_helm.template(VALUE_SETS[values])
    (config,) = by_kind(objects, "ConfigMap").values()
    known = {f"PUSHRELAY_{field.upper()}" for field in Settings.model_fields}
    assert sorted(set(config["data"]) - known) == []
    for c in containers(objects).values():
        assert sorted({e["name"] for e in c.get("env", [])} - known) == []
        settings_of(objects, c, monkeypatch)  # parses: no ValidationError


def test_kafka_tls_and_sasl_are_wired_to_their_secrets(
    everything: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, c in containers(everything).items():
        env = {e["name"]: e for e in c["env"]}
        for var, key in (("PUSHRELAY_KAFKA_SASL_USERNAME", "username"),
                         ("PUSHRELAY_KAFKA_SASL_PASSWORD", "password")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {
                "name": "pushrelay-kafka-user", "key": key}, name
        settings = settings_of(everything, c, monkeypatch)
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        tls_dir = mounts["kafka-tls"]["mountPath"]
        assert mounts["kafka-tls"]["readOnly"] is True
        assert {settings.kafka_ca_file, settings.kafka_cert_file, settings.kafka_key_file} == {
            f"{tls_dir}/ca.crt", f"{tls_dir}/tls.crt", f"{tls_dir}/tls.key"}
    for d in by_kind(everything, "Deployment").values():
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["secretName"] == "pushrelay-kafka-tls"


def test_chart_readme_documents_every_setting() -> None:
    """Every PUSHRELAY_* setting is either a typed value or documented for ``config``."""
    readme = (CHART / "README.md").read_text()
    missing = [f"PUSHRELAY_{f.upper()}" for f in Settings.model_fields
               if f != "kubeconfig" and f"PUSHRELAY_{f.upper()}" not in readme]
    assert missing == []


# --- 3. values that are refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ingress": {"replicas": "two"}}, "replicas"),
        ({"logLevel": "LOUD"}, "logLevel"),
        ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
        ({"replicas": 3}, "replicas"),  # a misplaced key is not silently ignored
        ({"config": {"kafka_bootstrap": "x:9092"}}, "^PUSHRELAY_[A-Z0-9_]+$"),
        ({"baseUrl": "pushrelay.example.com"}, "baseUrl"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.existingSecret"),
        ({"kafka": {"tls": {"existingSecret": "ca"}}}, "SSL or SASL_SSL"),
        ({"kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "ca",
                                                       "certKey": "tls.crt"}}},
         "go together"),
        ({"config": {"PUSHRELAY_KAFKA_BOOTSTRAP": "x:9092"}}, "typed value"),
        ({"ingress": {"terminationGracePeriodSeconds": 25}}, "terminationGracePeriodSeconds"),
        ({"router": {"pdb": {"minAvailable": 1}}}, "not both"),
        ({"bus": "kafak"}, "bus"),
        ({"bus": "embedded", "allInOne": {"replicas": 2}}, "allInOne/replicas"),
        ({"ingress": {"spool": {"volume": "hostPath"}}}, "spool/volume"),
        ({"ingress": {"spool": {"volume": "pvc", "size": "lots"}}}, "spool/size"),
        ({"config": {"PUSHRELAY_BUS": "embedded"}}, "typed value"),
        ({"config": {"PUSHRELAY_SPOOL_DIR": "/x"}}, "typed value"),
        ({"bus": "embedded", "allInOne": {"terminationGracePeriodSeconds": 25}},
         "allInOne.terminationGracePeriodSeconds"),
    ],
)
def test_broken_values_are_refused_by_name(
    chart_helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in chart_helm.template_error(values)


# --- monitoring objects ------------------------------------------------------------------

_METRIC = re.compile(r"\b(pushrelay_[a-z_]+)\b")


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "gauge": ("",)}


def registered_metric_names() -> set[str]:
    """The series names pushrelay exports (whether or not a sample exists yet)."""
    return {family.name + suffix for family in metrics.REGISTRY.collect()
            for suffix in _SUFFIXES[family.type]}


def test_alerts_cover_the_issue_and_use_real_metrics(everything: list[dict[str, Any]]) -> None:
    (rule,) = by_kind(everything, "PrometheusRule").values()
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"PushrelayReceiverNotServed", "PushrelayIngressUnavailable",
                           "PushrelayDeadLetters", "PushrelayRefreshLag"}
    known = registered_metric_names()
    histograms = {n.removesuffix("_bucket") for n in known if n.endswith("_bucket")}
    for name, alert in alerts.items():
        used = set(_METRIC.findall(alert["expr"]))
        assert used and used <= known, (name, used - known)
        assert 'namespace="pushrelay"' in alert["expr"], name
        assert alert["labels"]["team"] == "platform"
    assert "pushrelay_end_to_end_seconds" in histograms
    # The label values the alerts select on are the ones the ingress sets.
    ingress_source = (ROOT / "ingress" / "app.py").read_text()
    assert '_reject("unavailable"' in ingress_source and '_reject("not_ready"' in ingress_source
    assert 'labels("unserved")' in (ROOT / "ingress" / "registry.py").read_text()


def test_metrics_services_reach_each_components_metrics_port(
    everything: list[dict[str, Any]]
) -> None:
    (monitor,) = by_kind(everything, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in by_kind(everything, "Service").values()
                if selector.items() <= s["metadata"]["labels"].items()]
    deployments = by_kind(everything, "Deployment")
    assert len(services) == len(deployments) == 3
    for svc in services:
        assert svc["spec"]["clusterIP"] == "None"  # never the public receiver Service
        (port,) = svc["spec"]["ports"]
        assert port["name"] == monitor["spec"]["endpoints"][0]["port"]
        (target,) = [d for d in deployments.values()
                     if svc["spec"]["selector"].items()
                     <= d["spec"]["template"]["metadata"]["labels"].items()]
        (c,) = target["spec"]["template"]["spec"]["containers"]
        annotations = target["spec"]["template"]["metadata"]["annotations"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports[port["targetPort"]] == port["port"] == int(annotations["prometheus.io/port"])
        assert c["readinessProbe"]["httpGet"]["port"] == port["targetPort"]


def test_network_policies_open_the_ports_the_pods_serve(
    everything: list[dict[str, Any]]
) -> None:
    policies = by_kind(everything, "NetworkPolicy")
    for name, d in by_kind(everything, "Deployment").items():
        policy = policies[name]
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        (c,) = d["spec"]["template"]["spec"]["containers"]
        opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert opened == {p["name"] for p in c["ports"]}, name
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert egress_ports == {53, 9093, 443}, name


# --- 4. the API server's verdict ---------------------------------------------------------


class Discovery:
    """kind -> (collection path template, namespaced), from the API server's discovery."""

    def __init__(self, kube: ApiClient) -> None:
        self._kube = kube
        self._groups: dict[str, dict[str, tuple[str, bool]]] = {}

    async def collection(self, obj: dict[str, Any], namespace: str) -> str:
        api_version = obj["apiVersion"]
        if api_version not in self._groups:
            base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            listing = await request_json(self._kube, "GET", base)
            self._groups[api_version] = {
                r["kind"]: (f"{base}/{{ns}}{r['name']}", r["namespaced"])
                for r in listing["resources"] if "/" not in r["name"]}
        template, namespaced = self._groups[api_version][obj["kind"]]
        return template.format(ns=f"namespaces/{namespace}/" if namespaced else "")


async def dry_run_create(kube: ApiClient, path: str, obj: dict[str, Any]) -> tuple[int, Any, str]:
    status, raw, headers = await raw_request(
        kube, "POST", path, body=obj, request_timeout=30,
        query=[("dryRun", "All"), ("fieldValidation", "Strict")])
    warnings = ", ".join(headers.getall("Warning", [])) if hasattr(headers, "getall") else ""
    return status, orjson.loads(raw) if raw else None, warnings


async def ensure_monitoring_crds(kube: ApiClient) -> None:
    """Our minimal CRDs, where the cluster has none (left in place: other sessions may
    be validating against them right now; they define no controller and store nothing)."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in yaml.safe_load_all(MONITORING_CRDS.read_text()):
        status, _, _ = await raw_request(kube, "GET", f"{base}/{crd['metadata']['name']}")
        if status == 404:
            status, raw, _ = await raw_request(kube, "POST", base, body=crd)
            assert status in (201, 409), raw

        async def established(name: str = crd["metadata"]["name"]) -> bool:
            got = await request_json(kube, "GET", f"{base}/{name}")
            return any(c["type"] == "Established" and c["status"] == "True"
                       for c in (got.get("status") or {}).get("conditions") or [])

        await eventually(established, within=60)


@pytest.fixture
async def restricted_namespace(kube: ApiClient) -> AsyncIterator[str]:
    async with temporary_namespace(kube, "helm") as name:
        await request_json(kube, "PATCH", f"/api/v1/namespaces/{name}", body={
            "metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                    "pod-security.kubernetes.io/enforce-version": "latest"}}},
            content_type="application/merge-patch+json")
        yield name


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
async def test_every_object_passes_a_server_side_dry_run(
    chart_helm: Helm, kube: ApiClient, restricted_namespace: str, values: str
) -> None:
    release = unique("pr")  # cluster-scoped names are the release's: no clash with others
    objects = await asyncio.to_thread(chart_helm.template, VALUE_SETS[values],
                                      release=release, namespace=restricted_namespace)
    if any(o["apiVersion"].startswith("monitoring.coreos.com/") for o in objects):
        await ensure_monitoring_crds(kube)
    discovery = Discovery(kube)
    failures = []
    for obj in objects:
        path = await discovery.collection(obj, restricted_namespace)
        status, body, warnings = await dry_run_create(kube, path, obj)
        if status != 201 or warnings:
            failures.append((ident(obj), status, warnings, body))
    assert failures == []


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
async def test_pods_pass_restricted_pod_security(
    chart_helm: Helm, kube: ApiClient, restricted_namespace: str, values: str
) -> None:
    """A Pod from every workload, dry-run in a namespace enforcing "restricted"
    (with its ServiceAccount created for real, as the admission checks it exists)."""
    release = unique("pr")
    objects = await asyncio.to_thread(chart_helm.template, VALUE_SETS[values],
                                      release=release, namespace=restricted_namespace)
    ns_path = f"/api/v1/namespaces/{restricted_namespace}"
    for account in by_kind(objects, "ServiceAccount").values():
        await request_json(kube, "POST", f"{ns_path}/serviceaccounts", body=account)
    for name, d in workloads(objects).items():
        template = d["spec"]["template"]
        spec = copy.deepcopy(template["spec"])
        # A StatefulSet's Pod gets a volume per claim template, as its controller adds them.
        spec["volumes"] = spec.get("volumes", []) + [
            {"name": t["metadata"]["name"],
             "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}-0"}}
            for t in d["spec"].get("volumeClaimTemplates", [])]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": f"{name}-", **template["metadata"]},
               "spec": spec}
        status, body, warnings = await dry_run_create(kube, f"{ns_path}/pods", pod)
        assert (status, warnings) == (201, ""), (name, body)
    weak = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "weak-"},
            "spec": {"containers": [{"name": "c", "image": "pushrelay:latest"}]}}
    status, body, _ = await dry_run_create(kube, f"{ns_path}/pods", weak)
    assert status == 403 and "PodSecurity" in str(body), body

