"""Quay.io webhook receivers: which URLs exist, computed exactly as Kargo does.

Pure functions, no I/O: the ingress feeds them objects from its informers, the
``pushrelay receivers`` command feeds them objects it lists.

A receiver's path is ``join(base_path, "quay", sha256_hex(project + name + secret))``
(Kargo's ``buildWebhookPath``): ``project`` is the ProjectConfig's namespace, or
``""`` for a ClusterConfig receiver; ``secret`` is the raw value of the ``secret``
key of the referenced Secret; ``base_path`` is the path of the public base URL.
``join`` follows Go's ``url.JoinPath`` (``path.Join`` cleaning: no ``//``, no
``.``/``..`` segments), so the bytes match Kargo's for every base URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pushrelay.core.fields import items, mapping, text

QUAY: Final = "quay"
SECRET_KEY: Final = "secret"
PROJECT_CONFIG_KIND: Final = "ProjectConfig"
CLUSTER_CONFIG_KIND: Final = "ClusterConfig"
# Go's url.(*URL).EscapedPath leaves these unescaped (besides letters and digits).
_PATH_SAFE: Final = "-_.~$&+,/:;=@"

#: (namespace, name) → the Secret object as the API returns it, or None.
SecretLookup = Callable[[str, str], Mapping[str, Any] | None]


# ---- paths and URLs -------------------------------------------------------

def receiver_hash(project: str, name: str, secret: str | bytes) -> str:
    """``sha256_hex(project + name + secret)``, lower-case hex."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(project.encode() + name.encode() + raw).hexdigest()


def clean_path(path: str) -> str:
    """Go's ``path.Clean``: the shortest equivalent slash-separated path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def join_path(base: str, *elems: str) -> str:
    """Go's ``url.JoinPath(base, elems...)`` applied to a URL path."""
    parts = [base, *elems]
    if base.startswith("/"):
        joined = clean_path("/".join(p for p in parts if p))
    else:  # a relative base stays relative, without ".." escaping it
        joined = clean_path("/" + "/".join(p for p in parts if p))[1:]
    if parts[-1].endswith("/") and not joined.endswith("/"):
        joined += "/"
    return joined


def base_path_of(base_url: str) -> str:
    """The path of the public base URL, escaped as Go escapes it; ``/`` when none.

    Kargo joins the *escaped* base path, so a receiver path may hold ``%XX``
    sequences literally (and its URL then has them escaped once more); an HTTP
    server's decoded request path equals it again.
    """
    return quote(unquote(urlsplit(base_url).path), safe=_PATH_SAFE) or "/"


def receiver_path(base_path: str, project: str, name: str, secret: str | bytes) -> str:
    """The path Kargo computes for a Quay.io receiver (``project`` ``""`` for cluster)."""
    return join_path(base_path or "/", QUAY, receiver_hash(project, name, secret))


def receiver_url(base_url: str, path: str) -> str:
    """``base_url`` with its path replaced by ``path`` (escaped as Go escapes paths)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, quote(path, safe=_PATH_SAFE),
                       parts.query, parts.fragment))


# ---- configuration objects -------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """The ProjectConfig or ClusterConfig declaring a receiver."""

    kind: str
    namespace: str  # "" for the cluster-scoped ClusterConfig
    name: str
    uid: str = ""

    @property
    def project(self) -> str | None:
        """The project the receiver serves; None means every namespace."""
        return self.namespace if self.kind == PROJECT_CONFIG_KIND else None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class ReceiverConfig:
    """One Quay.io entry of ``spec.webhookReceivers``."""

    name: str
    secret_name: str


@dataclass(frozen=True)
class Receiver:
    """A served receiver."""

    owner: Owner
    name: str
    secret_namespace: str
    secret_name: str
    path: str
    url: str

    @property
    def project(self) -> str | None:
        return self.owner.project

    @property
    def hash(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def short_hash(self) -> str:
        """The first 8 hex characters: the most that may be logged."""
        return self.hash[:8]

    def details(self) -> dict[str, str]:
        """The ``status.webhookReceivers`` entry (Kargo's WebhookReceiverDetails)."""
        return {"name": self.name, "path": self.path, "url": self.url}


@dataclass(frozen=True)
class Unserved:
    """A declared receiver that is not served, and why (safe to show: no secret)."""

    owner: Owner
    name: str
    reason: str


@dataclass
class ConfigReceivers:
    """What one ProjectConfig / ClusterConfig declares, served or not."""

    owner: Owner
    served: list[Receiver] = field(default_factory=list)
    unserved: list[Unserved] = field(default_factory=list)


def owner_of(obj: Mapping[str, Any]) -> Owner:
    return Owner(text(obj, "kind") or PROJECT_CONFIG_KIND, text(obj, "metadata", "namespace"),
                 text(obj, "metadata", "name"), text(obj, "metadata", "uid"))


def parse_receivers(obj: Mapping[str, Any]) -> tuple[list[ReceiverConfig], list[tuple[str, str]]]:
    """The Quay.io receivers of a config's ``spec.webhookReceivers``.

    Returns the well-formed Quay.io entries and ``(name, problem)`` for malformed
    ones. Entries for other senders (GitHub, GitLab, ...) are not ours: skipped.
    """
    found: list[ReceiverConfig] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, entry in enumerate(items(obj, "spec", "webhookReceivers")):
        if not isinstance(entry, Mapping) or QUAY not in entry:
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"#{index}", "webhook receiver has no name"))
            continue
        secret_name = text(entry, QUAY, "secretRef", "name")
        if not secret_name:
            problems.append((name, "quay.secretRef.name is not set"))
            continue
        if name in seen:
            problems.append((name, "duplicate webhook receiver name"))
            continue
        seen.add(name)
        found.append(ReceiverConfig(name, secret_name))
    return found, problems


def secret_value(secret: Mapping[str, Any] | None) -> tuple[bytes | None, str | None]:
    """The raw value of the Secret's ``secret`` key, or None and the reason."""
    if secret is None:
        return None, "not found"
    encoded = mapping(secret, "data").get(SECRET_KEY)
    if encoded is None:
        return None, f"has no {SECRET_KEY!r} data key"
    try:
        value = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return None, f"data key {SECRET_KEY!r} is not valid base64"
    if not value:
        return None, f"data key {SECRET_KEY!r} is empty"
    return value, None


def _scope(owner: Owner, system_resources_namespace: str) -> tuple[str, str] | str:
    """(project, namespace of its Secrets) of a config, or why it serves nothing."""
    if owner.kind == CLUSTER_CONFIG_KIND:
        return "", system_resources_namespace
    if owner.name != owner.namespace:  # Kargo's admission webhook forbids this
        return (f"ProjectConfig name {owner.name!r} must equal its namespace "
                f"{owner.namespace!r} (the project)")
    return owner.namespace, owner.namespace


def secret_refs(obj: Mapping[str, Any], *, system_resources_namespace: str,
                ) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret :func:`receivers_for` would look up for ``obj``."""
    scope = _scope(owner_of(obj), system_resources_namespace)
    if isinstance(scope, str):
        return set()
    configs, _ = parse_receivers(obj)
    return {(scope[1], c.secret_name) for c in configs}


def receivers_for(
    obj: Mapping[str, Any], *, base_url: str, system_resources_namespace: str,
    lookup: SecretLookup,
) -> ConfigReceivers:
    """Every Quay.io receiver one ProjectConfig or ClusterConfig declares."""
    owner = owner_of(obj)
    result = ConfigReceivers(owner)
    configs, problems = parse_receivers(obj)
    result.unserved += [Unserved(owner, name, reason) for name, reason in problems]
    scope = _scope(owner, system_resources_namespace)
    if isinstance(scope, str):
        result.unserved += [Unserved(owner, c.name, scope) for c in configs]
        return result
    project, secrets_namespace = scope
    base_path = base_path_of(base_url)
    for config in configs:
        value, why = secret_value(lookup(secrets_namespace, config.secret_name))
        if value is None:
            reason = f"Secret {secrets_namespace}/{config.secret_name} {why}"
            result.unserved.append(Unserved(owner, config.name, reason))
            continue
        path = receiver_path(base_path, project, config.name, value)
        result.served.append(Receiver(owner, config.name, secrets_namespace,
                                      config.secret_name, path, receiver_url(base_url, path)))
    return result


def index_receivers(
    configs: Iterable[ConfigReceivers],
) -> tuple[dict[str, Receiver], list[Unserved]]:
    """Path → receiver over every config, and the receivers left out.

    Two receivers with the same path (only possible with the same project, name
    and secret, or a deliberate collision of concatenations) are both left out:
    a push must never reach the wrong project.
    """
    table: dict[str, Receiver] = {}
    clashes: dict[str, list[Receiver]] = {}
    unserved: list[Unserved] = []
    for config in configs:
        unserved += config.unserved
        for receiver in config.served:
            if receiver.path in clashes:
                clashes[receiver.path].append(receiver)
            elif receiver.path in table:
                clashes[receiver.path] = [table.pop(receiver.path), receiver]
            else:
                table[receiver.path] = receiver
    for group in clashes.values():
        for receiver in group:
            others = ", ".join(f"{o.owner} receiver {o.name!r}" for o in group if o is not receiver)
            unserved.append(Unserved(receiver.owner, receiver.name,
                                     f"URL collides with {others}"))
    return table, unserved
