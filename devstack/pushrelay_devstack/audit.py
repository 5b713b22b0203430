"""What a devstack's API server sent, from its side: for tests that must prove it.

:func:`apiserver_args` gives the flags that make a devstack's kube-apiserver
write one JSON line per completed Secret ``get``/``list`` (with the response
object: for a metadata-only list, a ``PartialObjectMetadataList``) and per
Secret ``watch`` (request only: the API server never audits watch streams).
:func:`secret_reads` reads them back. The log is the API server's own account,
independent of anything the client counts.

Watch streams are covered by :func:`bytes_sent_to`: the kernel's count of bytes
the API server's sockets sent to one process (``ss``'s TCP_INFO). The API
server's ``apiserver_watch_events_sizes`` cannot serve: it counts an event's
full object for every watcher, metadata-only ones included (measured).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: RequestResponse
    resources: [{group: "", resources: ["secrets"]}]
    verbs: ["get", "list"]
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
    verbs: ["watch"]
  - level: None
"""


def apiserver_args(directory: Path) -> list[str]:
    """kube-apiserver flags writing the audit log to ``directory/audit.log``."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = directory / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log_path(directory)}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
            "--audit-log-maxbackup=1", "--audit-log-maxsize=1024"]


def log_path(directory: Path) -> Path:
    return directory / "audit.log"


@dataclass(frozen=True)
class SecretRead:
    """One audited Secret read."""

    verb: str  # get | list | watch
    user_agent: str
    namespace: str | None  # None: every namespace
    field_selector: str
    response_kind: str | None  # get/list: the kind of the object sent back
    data_names: frozenset[tuple[str, str]]  # Secrets whose data the response carried

    @property
    def metadata_only(self) -> bool:
        return self.response_kind in ("PartialObjectMetadataList", "PartialObjectMetadata")


def _data_names(response: Any) -> frozenset[tuple[str, str]]:
    if not isinstance(response, dict):
        return frozenset()
    items = response.get("items") if "items" in response else [response]
    names = set()
    for item in items or []:
        if isinstance(item, dict) and ("data" in item or "stringData" in item):
            meta = item.get("metadata") or {}
            names.add((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
    return frozenset(names)


def secret_reads(path: Path, offset: int = 0) -> Iterator[SecretRead]:
    """The Secret reads audited in ``path`` from byte ``offset`` on."""
    if not path.exists():
        return
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line still being written
            ref = event.get("objectRef") or {}
            if ref.get("resource") != "secrets" or event.get("stage") != "ResponseComplete":
                continue
            query = parse_qs(urlsplit(str(event.get("requestURI") or "")).query)
            response = event.get("responseObject")
            yield SecretRead(
                verb=str(event.get("verb")), user_agent=str(event.get("userAgent") or ""),
                namespace=ref.get("namespace"),
                field_selector=(query.get("fieldSelector") or [""])[0],
                response_kind=response.get("kind") if isinstance(response, dict) else None,
                data_names=_data_names(response))


def size(path: Path) -> int:
    """The log's current size: the offset of what comes next."""
    return path.stat().st_size if path.exists() else 0


_SOCKET = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)\s+users:\(\(\"[^\"]*\",pid=(\d+),")
_SENT = re.compile(r"\bbytes_sent:(\d+)")


def bytes_sent_to(server_pid: int, client_pid: int) -> int:
    """Bytes the open TCP connections of ``server_pid`` have sent to ``client_pid``
    (loopback; connections closed meanwhile are not counted)."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True).stdout
    sockets: list[tuple[str, int, int, str]] = []  # (local, pid, bytes_sent, peer)
    current: tuple[str, int, str] | None = None
    for line in out.splitlines():
        found = _SOCKET.search(line)
        if found:
            local, peer = f"{found[1]}:{found[2]}", f"{found[3]}:{found[4]}"
            current = (local, int(found[5]), peer)
            continue
        sent = _SENT.search(line)
        if current is not None and sent:
            sockets.append((current[0], current[1], int(sent[1]), current[2]))
            current = None
    clients = {local for local, pid, _, _ in sockets if pid == client_pid}
    return sum(sent for _, pid, sent, peer in sockets if pid == server_pid and peer in clients)
