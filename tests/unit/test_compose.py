"""compose/: the Compose file is valid Compose, and it runs what pushrelay needs.

There is no Docker engine on the machine these tests run on, so the Compose file
is checked against the Compose Specification JSON Schema (vendored in
``tests/data/compose-spec.json``, see its NOTICE) both as written and after
Compose-style variable interpolation, and its content is checked against the
project: every ``PUSHRELAY_*`` variable is a real setting, every command is a real
CLI subcommand, router and refresher can be scaled with ``--scale``.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from pushrelay.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
HOST_NETWORK_FILE = ROOT / "compose" / "compose.host-network.yml"
EMBEDDED_FILE = ROOT / "compose" / "compose.embedded.yml"
EMBEDDED_HOST_NETWORK_FILE = ROOT / "compose" / "compose.embedded.host-network.yml"
DOCKERFILE = ROOT / "compose" / "Dockerfile"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"

SERVICES = ("ingress", "router", "refresher")
KUBECONFIG_TARGET = "/etc/pushrelay/kubeconfig"

# Compose interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariable(LookupError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Apply Compose's variable interpolation to every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("plain") or m.group("name")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        unset_or_empty = not current
        missing = unset_or_empty if op and op.startswith(":") else current is None
        if op in (":-", "-"):
            return arg if missing else (current or "")
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return current or ""
        if op in (":+", "+"):
            return "" if missing else arg
        return current or ""

    return _INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(SCHEMA_FILE.read_bytes())
    return data


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft201909Validator)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The Compose model as ``docker compose config`` would see it with a minimal .env."""
    env = {"KUBECONFIG_FILE": "/home/user/.kube/pushrelay.kubeconfig", "HOME": "/home/user"}
    data: dict[str, Any] = interpolate(raw, env)
    return data


def errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def pushrelay_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: compose["services"][name] for name in SERVICES}


# --- the Compose Specification -------------------------------------------------------


def test_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    assert (SCHEMA_FILE.parent / "compose-spec.LICENSE").read_text().startswith(
        "\n                                 Apache License"
    )


def test_compose_file_validates_as_written(
    validator: jsonschema.protocols.Validator, raw: dict[str, Any]
) -> None:
    assert errors(validator, raw) == []


def test_compose_file_validates_after_interpolation(
    validator: jsonschema.protocols.Validator, compose: dict[str, Any]
) -> None:
    assert errors(validator, compose) == []


def test_compose_file_validates_with_every_override_set(
    validator: jsonschema.protocols.Validator, raw: dict[str, Any]
) -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    env = {name: "1" for name in names} | {
        "KUBECONFIG_FILE": "./kubeconfig", "PUSHRELAY_INGRESS_HOST_PORTS": "9080-9081",
        "PUSHRELAY_BASE_URL": "https://relay.example.com", "PUSHRELAY_IMAGE": "pushrelay:0.1.0",
        "KAFKA_IMAGE": "apache/kafka:3.9.1",
    }
    assert errors(validator, interpolate(raw, env)) == []


@pytest.mark.parametrize(
    ("mutation", "where"),
    [
        (lambda c: c["services"]["router"].update(imagee="typo"), "services/router"),
        (lambda c: c["services"]["kafka"]["healthcheck"].update(retries="many"),
         "services/kafka/healthcheck/retries"),
        (lambda c: c["services"]["ingress"]["depends_on"]["kafka"].update(condition="up"),
         "services/ingress/depends_on"),
        (lambda c: c.update(servics={}), "<root>"),
    ],
    ids=["unknown-service-key", "wrong-type", "bad-enum", "unknown-top-level-key"],
)
def test_schema_rejects_broken_compose_files(
    validator: jsonschema.protocols.Validator, compose: dict[str, Any], mutation: Any, where: str
) -> None:
    """The validator really validates: a broken copy of our own file fails, at the right spot."""
    broken = copy.deepcopy(compose)
    mutation(broken)
    found = errors(validator, broken)
    assert found, "a broken Compose file passed validation"
    assert any(e.startswith(where) for e in found), found


def test_interpolation_requires_a_kubeconfig(raw: dict[str, Any]) -> None:
    with pytest.raises(MissingVariable, match="KUBECONFIG_FILE"):
        interpolate(raw, {})


def test_interpolation_helper() -> None:
    env = {"SET": "x", "EMPTY": ""}
    text = "$$SET ${SET} $SET ${NOPE:-d} ${EMPTY:-d} ${EMPTY-d}"
    assert interpolate(text, env) == "$SET x x d d "
    assert interpolate("${SET:+alt}${NOPE:+alt}", env) == "alt"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?need it}", env)


# --- what the stack runs ---------------------------------------------------------------


def test_stack_has_kafka_and_the_three_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", *SERVICES}


def test_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert not any("ZOOKEEPER" in k for k in env)
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    # kafka-storage format needs a base64url-encoded 16-byte cluster id.
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1"
    assert kafka["healthcheck"]["test"]
    # the data directory is a named volume, not the container's writable layer
    assert any(str(v).endswith(":" + env["KAFKA_LOG_DIRS"]) for v in kafka["volumes"])
    assert any(str(p).startswith("127.0.0.1:") for p in kafka.get("ports", []))


@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_its_own_cli_command(compose: dict[str, Any], name: str) -> None:
    from pushrelay.cli.main import build_parser

    service = compose["services"][name]
    assert service["command"] == [name]
    # ENTRYPOINT ["pushrelay"] + command must be a real subcommand.
    args = build_parser().parse_args(service["command"])
    assert getattr(args, "func", None) is not None


@pytest.mark.parametrize("name", SERVICES)
def test_service_waits_for_healthy_kafka_and_has_a_healthcheck(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    test = service["healthcheck"]["test"]
    port = str(service["environment"]["PUSHRELAY_HEALTH_PORT"])
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(test)


def test_only_the_ingress_public_port_is_published(compose: dict[str, Any]) -> None:
    """The health port (readiness, metrics, OpenAPI) never leaves the Compose network."""
    health = str(compose["services"]["ingress"]["environment"]["PUSHRELAY_HEALTH_PORT"])
    for name in SERVICES:
        published = compose["services"][name].get("ports") or []
        assert all(not str(p).endswith(f":{health}") for p in published), (name, published)
    ports = compose["services"]["ingress"]["ports"]
    assert [str(p).rsplit(":", 1)[1] for p in ports] == ["8080"]


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_scalable(compose: dict[str, Any], name: str) -> None:
    """``docker compose up --scale NAME=3`` needs no fixed name and no fixed host port."""
    service = compose["services"][name]
    assert "container_name" not in service
    assert "hostname" not in service
    for port in service.get("ports", []):
        spec = str(port)
        parts = spec.rsplit(":", 1)
        if len(parts) == 1:
            continue  # container port only: an ephemeral host port per replica
        host = parts[0].rsplit(":", 1)[-1]
        assert "-" in host, f"{name}: fixed host port {spec!r} cannot scale"
    if name != "ingress":
        assert "ports" not in service


def test_ingress_is_published(compose: dict[str, Any]) -> None:
    ports = [str(p) for p in compose["services"]["ingress"]["ports"]]
    assert ports == ["8080-8084:8080"]
    assert str(compose["services"]["ingress"]["environment"]["PUSHRELAY_INGRESS_PORT"]) == "8080"


@pytest.mark.parametrize("name", SERVICES)
def test_service_reaches_kubernetes_through_a_read_only_kubeconfig(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["environment"]["KUBECONFIG"] == KUBECONFIG_TARGET
    mounts = [v for v in service["volumes"] if isinstance(v, dict)]
    kubeconfig = [v for v in mounts if v["target"] == KUBECONFIG_TARGET]
    assert len(kubeconfig) == 1
    assert kubeconfig[0]["type"] == "bind"
    assert kubeconfig[0]["read_only"] is True
    assert kubeconfig[0]["source"] == "/home/user/.kube/pushrelay.kubeconfig"


@pytest.mark.parametrize("name", SERVICES)
def test_service_settings_are_real_settings(compose: dict[str, Any], name: str) -> None:
    env = compose["services"][name]["environment"]
    known = {f"PUSHRELAY_{field.upper()}" for field in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("PUSHRELAY_") and k not in known)
    assert unknown == []
    assert env["PUSHRELAY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    # and the values parse: the same validation the service runs at start
    values = {k: str(v) for k, v in env.items() if k.startswith("PUSHRELAY_")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PUSHRELAY_")}
    with pytest.MonkeyPatch.context() as mp:
        for key in set(os.environ) - set(clean):
            mp.delenv(key)
        for key, value in values.items():
            mp.setenv(key, value)
        settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_hardened(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    uid = service["user"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert service.get("privileged", False) is False


@pytest.mark.parametrize("name", SERVICES)
def test_service_builds_from_the_dockerfile(compose: dict[str, Any], name: str) -> None:
    build = compose["services"][name]["build"]
    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert (COMPOSE_FILE.parent / build["context"] / "pyproject.toml").is_file()


# --- the image ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines if line and not line.startswith("#")
    ]


def test_dockerfile_is_slim_python_311_non_root() -> None:
    instructions = dockerfile_instructions()
    args = {v.split("=", 1)[0]: v.split("=", 1)[1] for k, v in instructions if k == "ARG"}
    assert args["BASE"] == "python:3.11-slim"  # a registry base by default; `make image` sets it
    stages = [v for k, v in instructions if k == "FROM"]
    assert stages[0] == "${BASE} AS build" and stages[-1] == "${BASE}"
    users = [v for k, v in instructions if k == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    assert any(k == "RUN" and "pip install" in v for k, v in instructions)
    # the final stage copies the virtualenv only: no pip cache, wheels or compilers
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    assert [v for k, v in final if k == "COPY"] == ["--from=build /opt/pushrelay /opt/pushrelay"]
    assert not any("devstack" in v for k, v in final)
    entrypoint = [orjson.loads(v) for k, v in instructions if k == "ENTRYPOINT"]
    assert entrypoint == [["pushrelay"]]


def test_dockerfile_user_matches_the_compose_and_kubernetes_default(
    compose: dict[str, Any],
) -> None:
    uid = [v for k, v in dockerfile_instructions() if k == "USER"][-1]
    assert compose["services"]["ingress"]["user"] == uid


def test_dockerignore_keeps_devstack_and_tests_out_of_the_context() -> None:
    lines = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert lines[lines.index("**") + 1:].count("devstack/") == 1
    assert "!tests/" not in lines


# --- the host-network override (engines without a bridge; loopback API servers) ----------


class _Reset:
    """Compose's ``!reset`` tag: the key is removed from the merged model."""


def _load_override(text: str) -> Any:
    """An override file: ``!reset`` as :class:`_Reset`; ``!override`` (replace, do not
    merge) as the plain value, which is what :func:`_merge` does with lists anyway."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!reset", lambda loader, node: _Reset())
    Loader.add_constructor("!override", lambda loader, node: (
        loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node, deep=True)))
    return yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge for what the override uses: mappings merge, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, _Reset):
                merged.pop(key, None)
            else:
                merged[key] = _merge(base.get(key), value)
        return merged
    return override


@pytest.fixture(scope="module")
def host_network(raw: dict[str, Any]) -> dict[str, Any]:
    override = _load_override(HOST_NETWORK_FILE.read_text())
    env = {"KUBECONFIG_FILE": "/home/user/.kube/pushrelay.kubeconfig", "HOME": "/home/user"}
    data: dict[str, Any] = interpolate(_merge(raw, override), env)
    return data


def test_host_network_override_validates_merged(
    validator: jsonschema.protocols.Validator, host_network: dict[str, Any]
) -> None:
    assert errors(validator, host_network) == []


def test_host_network_override_puts_everything_on_loopback(host_network: dict[str, Any]) -> None:
    for name, service in host_network["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service and "hostname" not in service, name
        if name != "kafka":
            assert service["environment"]["PUSHRELAY_KAFKA_BOOTSTRAP"] == "127.0.0.1:29092"
    kafka = host_network["services"]["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:29092"
    assert all("127.0.0.1:" in listener for listener in kafka["KAFKA_LISTENERS"].split(","))
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:29093"


@pytest.mark.parametrize("name", ["router", "refresher"])
def test_host_network_replicas_take_ephemeral_health_ports(
    host_network: dict[str, Any], name: str
) -> None:
    """Scaled replicas share the host's ports: a fixed health port would collide."""
    service = host_network["services"][name]
    assert str(service["environment"]["PUSHRELAY_HEALTH_PORT"]) == "0"
    # none at all: `docker compose up --wait` then waits for "running"; a disabled
    # one ({test: [NONE]}) makes --wait fail with "has no healthcheck configured"
    assert "healthcheck" not in service


# --- the ingress's spool -----------------------------------------------------------------


def named_volume_under(compose: dict[str, Any], service: dict[str, Any], path: str) -> str:
    """The named volume whose mount holds ``path`` (the root filesystem is read-only)."""
    mounts = [v for v in service["volumes"] if isinstance(v, dict) and v["type"] == "volume"
              and (path + "/").startswith(v["target"].rstrip("/") + "/")]
    assert len(mounts) == 1, (path, service["volumes"])
    assert mounts[0]["source"] in compose["volumes"]
    assert not mounts[0].get("read_only", False)
    return str(mounts[0]["source"])


def test_ingress_spools_on_a_named_volume(compose: dict[str, Any]) -> None:
    ingress = compose["services"]["ingress"]
    assert ingress["read_only"] is True
    spool = ingress["environment"]["PUSHRELAY_SPOOL_DIR"]
    assert named_volume_under(compose, ingress, spool) == "ingress-spool"
    for name in ("router", "refresher"):  # only the ingress spools
        assert "PUSHRELAY_SPOOL_DIR" not in compose["services"][name]["environment"]
        assert [v["target"] for v in compose["services"][name]["volumes"]] == [KUBECONFIG_TARGET]


# --- the embedded variant (compose.embedded.yml) ---------------------------------------------


def resolve_extends(document: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Compose's ``extends: {file, service}`` for what our files use: the base service,
    merged with the extending one (``!reset`` drops a key, ``!override`` replaces)."""
    resolved = copy.deepcopy(document)
    for name, service in document["services"].items():
        extends = service.get("extends")
        if extends is None:
            continue
        base_file = yaml.safe_load((directory / extends["file"]).read_text())
        base = base_file["services"][extends["service"]]
        local = {k: v for k, v in service.items() if k != "extends"}
        resolved["services"][name] = _merge(base, local)
    return resolved


EMBEDDED_ENV = {"KUBECONFIG_FILE": "/home/user/.kube/pushrelay.kubeconfig", "HOME": "/home/user"}


@pytest.fixture(scope="module")
def embedded_raw() -> dict[str, Any]:
    data: dict[str, Any] = _load_override(EMBEDDED_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def embedded(embedded_raw: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = interpolate(resolve_extends(embedded_raw, EMBEDDED_FILE.parent),
                                       EMBEDDED_ENV)
    return data


def test_embedded_file_validates(
    validator: jsonschema.protocols.Validator, embedded: dict[str, Any]
) -> None:
    assert errors(validator, embedded) == []


def test_embedded_is_one_all_in_one_container_without_kafka(embedded: dict[str, Any]) -> None:
    from pushrelay.cli.main import build_parser

    assert set(embedded["services"]) == {"pushrelay"}
    service = embedded["services"]["pushrelay"]
    assert service["command"] == ["all-in-one"]
    assert build_parser().parse_args(service["command"]).func is not None
    assert "depends_on" not in service
    env = {k: str(v) for k, v in service["environment"].items()}
    assert env["PUSHRELAY_BUS"] == "embedded"
    assert not [k for k in env if k.startswith("PUSHRELAY_KAFKA_")]
    assert named_volume_under(embedded, service, env["PUSHRELAY_DATA_DIR"]) == "pushrelay-data"
    # The same hardening, image and kubeconfig as docker-compose.yml's services.
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["environment"]["KUBECONFIG"] == KUBECONFIG_TARGET
    assert [v["target"] for v in service["volumes"] if v["type"] == "bind"] == [KUBECONFIG_TARGET]
    assert [str(p) for p in service["ports"]] == ["8080:8080"]
    assert "8081/readyz" in " ".join(service["healthcheck"]["test"])
    known = {f"PUSHRELAY_{field.upper()}" for field in Settings.model_fields}
    assert sorted(set(k for k in env if k.startswith("PUSHRELAY_")) - known) == []
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("PUSHRELAY_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings()
    assert settings.bus == "embedded"


def test_embedded_host_network_override_validates_merged(
    validator: jsonschema.protocols.Validator, embedded_raw: dict[str, Any]
) -> None:
    override = _load_override(EMBEDDED_HOST_NETWORK_FILE.read_text())
    merged = interpolate(_merge(resolve_extends(embedded_raw, EMBEDDED_FILE.parent), override),
                         EMBEDDED_ENV)
    assert errors(validator, merged) == []
    service = merged["services"]["pushrelay"]
    assert service["network_mode"] == "host" and "ports" not in service
    assert service["environment"]["PUSHRELAY_INGRESS_HOST"] == "127.0.0.1"
    health_port = str(service["environment"]["PUSHRELAY_HEALTH_PORT"])
    assert service["healthcheck"]["test"][-1] == health_port


def _cached_compose() -> Path | None:
    from pushrelay_devstack.paths import COMPOSE_VERSION, cache_dir

    binary = cache_dir() / "bin" / f"docker-compose-{COMPOSE_VERSION}"
    return binary if binary.is_file() else None


@pytest.mark.skipif(_cached_compose() is None,
                    reason="docker-compose not built in the cache (`make tools`)")
@pytest.mark.parametrize("files", [
    ["docker-compose.yml"], ["docker-compose.yml", "compose.host-network.yml"],
    ["compose.embedded.yml"], ["compose.embedded.yml", "compose.embedded.host-network.yml"],
], ids=["default", "host-network", "embedded", "embedded-host-network"])
def test_docker_compose_config_accepts_the_files(files: list[str], tmp_path: Path) -> None:
    """Where the real Compose is at hand (built once by the devstack), its own model
    of each combination (``config``: no engine needed) agrees with ours."""
    binary = _cached_compose()
    assert binary is not None
    argv = [str(binary), "--project-directory", str(COMPOSE_FILE.parent)]
    for name in files:
        argv += ["-f", str(COMPOSE_FILE.parent / name)]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    env = {**os.environ, "KUBECONFIG_FILE": str(kubeconfig), "HOME": str(tmp_path)}
    out = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True,
                         timeout=60, check=True, env=env)
    model = orjson.loads(out.stdout)
    if files[0] == "compose.embedded.yml":
        service = model["services"]["pushrelay"]
        assert service["environment"]["PUSHRELAY_BUS"] == "embedded"
        assert "depends_on" not in service and "kafka" not in model["services"]
    else:
        ingress = model["services"]["ingress"]
        assert "ingress-spool" in {v.get("source") for v in ingress["volumes"]}
