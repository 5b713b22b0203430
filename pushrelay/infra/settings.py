"""The settings tree: every knob is a ``PUSHRELAY_*`` environment variable.

Shared sections (:class:`BusSettings`, :class:`KafkaSettings`, :class:`KubernetesSettings`,
:class:`ProcessSettings`, joined in :class:`CommonSettings`) plus one section
per service (:class:`IngressSettings`, :class:`RouterSettings`,
:class:`RefresherSettings`). A process builds and validates only what it runs:
``pushrelay router`` reads the shared sections and the router's, nothing else;
``pushrelay all-in-one`` builds :class:`Settings`, all three. Field names are
the variable names without the prefix, so the flat ``PUSHRELAY_*`` names are
the contract (docs/deploy.md lists them) and nothing reads the environment
behind a service's back.
"""

from __future__ import annotations

from typing import Any, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="BaseSettings")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Section(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PUSHRELAY_", extra="ignore", validate_default=True, frozen=True
    )


class KafkaSettings(_Section):
    """The Kafka cluster, our topics, and how consumers commit."""

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("pushrelay.", description="prefix of all topic names")
    topic_partitions: int = Field(6, ge=1, description="partitions of topics we create")
    topic_replication: int = Field(1, ge=1, description="replication factor of topics we create")
    kafka_request_timeout: float = Field(10.0, gt=0, description="Kafka request timeout, s")
    commit_interval: float = Field(
        1.0, gt=0, description="how often router and refresher commit done offsets, s "
                               "(a crash redoes at most this much)")
    fetch_max_wait: float = Field(
        0.02, ge=0, le=0.5,
        description="while records flow, how long a consumer lets the broker gather records "
                    "before answering a fetch, s (per-hop latency against requests per record)")
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="how clients talk to the brokers (Kafka's security.protocol)"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL username")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ca_file: str | None = Field(
        None, description="PEM CA bundle that signs the brokers' certificates "
                          "(default: the system's trust store)"
    )
    kafka_cert_file: str | None = Field(
        None, description="PEM client certificate for mutual TLS (with kafka_key_file)"
    )
    kafka_key_file: str | None = Field(None, description="PEM private key of kafka_cert_file")

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"PUSHRELAY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "PUSHRELAY_KAFKA_SASL_USERNAME and PUSHRELAY_KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ValueError("PUSHRELAY_KAFKA_CERT_FILE and PUSHRELAY_KAFKA_KEY_FILE go together")
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.kafka_ca_file or self.kafka_cert_file):
            raise ValueError(
                "PUSHRELAY_KAFKA_CA_FILE / _CERT_FILE need PUSHRELAY_KAFKA_SECURITY_PROTOCOL "
                "SSL or SASL_SSL"
            )
        return self

    @property
    def push_topic(self) -> str:
        return f"{self.topic_prefix}push-events"

    @property
    def refresh_topic(self) -> str:
        return f"{self.topic_prefix}refresh-requests"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}dead-letters"

    @property
    def deliveries_topic(self) -> str:
        return f"{self.topic_prefix}deliveries"


class BusSettings(_Section):
    """Which durable log carries the events (docs/bus.md)."""

    bus: Literal["kafka", "embedded"] = Field(
        "kafka", description="kafka, or embedded (all-in-one on a local durable log, no Kafka)")
    data_dir: str | None = Field(
        None, description="directory of the embedded bus's log (PUSHRELAY_BUS=embedded; "
                          "a persistent volume, one process at a time)")
    data_max_bytes: int = Field(
        1024 ** 3, ge=1024 * 1024,
        description="the embedded log's size bound; beyond it pushes get 503 until the "
                    "consumers catch up")

    @field_validator("bus", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _embedded_needs_a_directory(self) -> Self:
        if self.bus == "embedded" and not self.data_dir:
            raise ValueError("PUSHRELAY_BUS=embedded needs PUSHRELAY_DATA_DIR (a directory "
                             "on a persistent volume)")
        return self


class KubernetesSettings(_Section):
    """The API server, and how much of it Events may use."""

    kubeconfig: str | None = Field(
        None, description="kubeconfig path (default: $KUBECONFIG, then in-cluster)"
    )
    event_qps: float = Field(
        2.0, gt=0,
        description="Kubernetes Event writes per second per service, at most (aggregated; "
                    "the rest wait for a later flush)",
    )


class ProcessSettings(_Section):
    """Logging, the health endpoints and the shutdown budget of one process."""

    log_level: LogLevel = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log format")
    health_host: str = Field("0.0.0.0", description="health/metrics listen host")
    health_port: int = Field(
        8081, ge=0, le=65535,
        description="port of /healthz, /readyz, /metrics (and the ingress's /openapi.json); "
                    "admin only, never public (0: ephemeral)",
    )
    shutdown_timeout: float = Field(
        20.0, gt=0, description="graceful shutdown budget from SIGTERM to exit, s")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class CommonSettings(BusSettings, KafkaSettings, KubernetesSettings, ProcessSettings):
    """The shared sections: what every service (and the CLI) needs."""

    def deprecations(self) -> list[str]:
        """One line per deprecated setting in use, for the log at start (sections
        with deprecated settings add theirs)."""
        return []


class IngressSettings(CommonSettings):
    ingress_host: str = Field("0.0.0.0", description="ingress listen host")
    ingress_port: int = Field(8080, ge=0, le=65535, description="ingress listen port")
    base_url: str = Field("http://localhost:8080", description="public base URL of receivers")
    write_status: bool = Field(False, description="write ProjectConfig.status.webhookReceivers")
    system_resources_namespace: str = Field(
        "kargo-system-resources", min_length=1,
        description="namespace of ClusterConfig receiver secrets (Kargo's "
                    "SYSTEM_RESOURCES_NAMESPACE)",
    )
    cluster_secrets_namespace: str | None = Field(
        None, min_length=1,
        description="deprecated alias of system_resources_namespace (which wins when both "
                    "are set)",
    )
    max_body_bytes: int = Field(2 * 1024 * 1024, gt=0, description="largest accepted body")
    publish_timeout: float = Field(
        5.0, gt=0, description="longest wait for a Kafka ack before answering 503, s"
    )
    retry_after: int = Field(30, ge=1, description="Retry-After seconds sent with a 503")
    spool_dir: str | None = Field(
        None, description="directory of the ingress's local spool: events Kafka cannot take "
                          "in time are fsync'd here, answered 202 and forwarded later (unset: "
                          "no spool, 503 instead; one ingress per directory)")
    spool_max_bytes: int = Field(
        256 * 1024 ** 2, ge=1024 * 1024,
        description="the spool's size bound; beyond it Kafka-less pushes get 503")
    spool_max_age: float = Field(
        24 * 3600.0, gt=0,
        description="the oldest spooled event's age bound, s; beyond it new pushes get 503")
    read_timeout: float = Field(10.0, gt=0, description="longest time to read a request, s")
    tls_cert: str | None = Field(None, description="PEM certificate: serve HTTPS when set")
    tls_key: str | None = Field(None, description="PEM private key for tls_cert")
    ingress_keepalive_timeout: float = Field(
        75.0, gt=0, description="idle keep-alive connections are closed after this, s")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _deprecated_alias(cls, data: Any) -> Any:
        """``cluster_secrets_namespace`` fills ``system_resources_namespace`` if that is unset."""
        if (isinstance(data, dict) and data.get("cluster_secrets_namespace")
                and "system_resources_namespace" not in data):
            return {**data, "system_resources_namespace": data["cluster_secrets_namespace"]}
        return data

    def deprecations(self) -> list[str]:
        """One line per deprecated setting in use, for the log at start."""
        old = self.cluster_secrets_namespace
        if old is None:
            return []
        line = ("PUSHRELAY_CLUSTER_SECRETS_NAMESPACE is deprecated: set "
                "PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE instead")
        if old != self.system_resources_namespace:
            line += (f" (ignored: PUSHRELAY_SYSTEM_RESOURCES_NAMESPACE="
                     f"{self.system_resources_namespace} wins)")
        return [line]


class RouterSettings(CommonSettings):
    router_group: str = Field("pushrelay-router", description="router consumer group")


class RefresherSettings(CommonSettings):
    refresher_group: str = Field("pushrelay-refresher", description="refresher consumer group")
    refresh_min_interval: float = Field(
        2.0, ge=0, description="per-Warehouse coalescing window, s"
    )
    refresh_qps: float = Field(20.0, gt=0, description="API-server write budget, writes/s")
    refresh_burst: int = Field(50, ge=1, description="API-server write burst")
    refresh_max_backoff: float = Field(30.0, gt=0, description="longest retry backoff, s")
    refresh_concurrency: int = Field(32, ge=1, le=1000, description="patches in flight, at most")
    refresh_max_outstanding: int = Field(
        20_000, ge=100,
        description="requests held in memory before consumption pauses",
    )
    refresh_patch_timeout: float = Field(
        10.0, gt=0, description="longest wait for one Warehouse PATCH, s (then retried)")


class Settings(IngressSettings, RouterSettings, RefresherSettings):
    """All three sections: what ``all-in-one`` validates (and the dev tools use)."""


def load_settings(cls: type[S], **overrides: Any) -> S:
    """``cls`` from the environment; invalid settings end the process with a readable list."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = [f"  PUSHRELAY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"]
                 else f"  {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None
