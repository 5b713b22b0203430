"""Fuzzing what the other property tests do not reach.

Extends ``test_normalize``, ``test_semver_properties`` and ``test_ingress_payload``
(which fuzz the parsers, constraints, qualifiers and payload parser) with:

* the event decoders (what every consumer runs on every Kafka message): any bytes
  and any JSON document give a model or :class:`InvalidEvent`, nothing else;
* ``route()`` over an index of arbitrary (often malformed) Warehouses: never
  raises, and every match is justified by an independent oracle;
* user regexes that are catastrophic for backtracking engines: RE2 evaluates
  them in time linear in the tag length (measured, not only "it finished");
* the ingress HTTP layer on raw bytes (request line, headers, encodings, bodies)
  and on mutated Quay payloads: never a 5xx (the documented 503 needs Kafka down,
  which these stand-ins never are).

Each test prints how many cases it ran (``-s``); the counts are in
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingress.app import WebhookHandler, build_app
from pushrelay.core.events import (
    DEAD_LETTER_SCHEMA,
    PUSH_SCHEMA,
    REFRESH_SCHEMA,
    InvalidEvent,
    decode_dead_letter,
    decode_push,
    decode_refresh,
    encode,
)
from pushrelay.core.matching import WarehouseIndex, event_urls, normalize_url, route
from pushrelay.core.normalize import normalize_chart, normalize_image
from pushrelay.core.qualifiers import compile_subscription
from pushrelay.core.receivers import Owner, Receiver, receiver_path
from pushrelay.infra.settings import IngressSettings

CASES: dict[str, int] = {}


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_cases() -> Iterator[None]:
    yield
    for name, n in sorted(CASES.items()):
        print(f"\nfuzz cases: {name}: {n}")


texts = st.one_of(st.text(max_size=30),
                  st.text(alphabet="abcz09./:-_@+ vV*^~<>=!|,", max_size=30))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)


# ---- event decoders -----------------------------------------------------------------

def _event_like(schema: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the right ``schema`` and plausible or arbitrary fields."""
    return st.fixed_dictionaries({"schema": st.just(schema)}, optional={
        "id": st.one_of(texts, json_values),
        "source": st.one_of(st.just("quay"), json_values),
        "received_at": st.one_of(st.just("2024-01-01T00:00:00Z"), texts, json_values),
        "requested_at": st.one_of(st.just("2024-01-01T00:00:00Z"), json_values),
        "scope": st.one_of(st.fixed_dictionaries({"project": st.none() | texts}), json_values),
        "receiver": st.none() | texts | json_values,
        "repository": st.one_of(st.just("quay.io/a/b"), json_values),
        "repo_urls": st.one_of(st.lists(texts, max_size=3), json_values),
        "tags": st.one_of(st.lists(texts, max_size=5), json_values),
        "delivery": st.none() | texts | json_values,
        "warehouse": st.one_of(st.fixed_dictionaries({"namespace": texts, "name": texts}),
                               json_values),
        "cause": st.one_of(st.fixed_dictionaries({
            "event": texts, "repo_url": texts, "tags": st.lists(texts, max_size=3),
            "delivery": st.none() | texts}), json_values),
        "stage": json_values, "reason": json_values, "payload": json_values,
    })


DECODERS = ((decode_push, PUSH_SCHEMA), (decode_refresh, REFRESH_SCHEMA),
            (decode_dead_letter, DEAD_LETTER_SCHEMA))


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps),
                 st.sampled_from([b"", b"null", b"[]", b"{}", b"\xff\xfe", b'{"schema":1}',
                                  b'{"schema":"pushrelay.push/v1","tags":[1e999]}',
                                  b'{"schema":"pushrelay.push/v1","id":123456789012345678901234}',
                                  b'{"schema":"pushrelay.refresh/v1","warehouse":NaN}'])))
def test_decoders_on_any_bytes(raw: bytes) -> None:
    count("event decoders, arbitrary bytes/JSON")
    for decode, _ in DECODERS:
        try:
            decode(raw)
        except InvalidEvent as exc:
            assert exc.reason
    for decode, _ in DECODERS:
        with pytest.raises(InvalidEvent):
            decode(None)


@settings(max_examples=600)
@given(st.sampled_from(DECODERS).flatmap(
    lambda d: st.tuples(st.just(d[0]), _event_like(d[1]))))
def test_decoders_on_event_like_objects(case: tuple[Any, dict[str, Any]]) -> None:
    count("event decoders, event-like objects")
    decode, data = case
    try:
        model = decode(orjson.dumps(data))
    except InvalidEvent as exc:
        assert exc.reason
        return
    assert decode(encode(model)) == model  # what we accept, we can re-encode


# ---- routing ---------------------------------------------------------------------------

REPOS = ["quay.io/a/b", "quay.io/A/B:tag", "docker.io/library/nginx", "nginx",
         "oci://ghcr.io/x/chart", "localhost:5000/a", " quay.io/a/b ", "bad url \x00"]
TAGS = ["1.0.0", "v1.2.3", "latest", "1.0.0-rc.1", "", "a" * 300, "2.0", "sha-abc"]

sub_bodies = st.fixed_dictionaries({}, optional={
    "repoURL": st.sampled_from(REPOS) | json_values,
    "imageSelectionStrategy": st.sampled_from(["SemVer", "Lexical", "NewestBuild", "Digest",
                                               "", "x"]) | json_values,
    "constraint": st.sampled_from(["^1.0.0", ">=1", "latest", "", "!!", "1.0.0"]) | json_values,
    "semverConstraint": st.sampled_from(["^1", "", "~2.0", "bad"]) | json_values,
    "name": texts,
    "strictSemvers": st.booleans() | json_values,
    "allowTagsRegexes": st.lists(st.sampled_from(["^v", ".*", "(", "a{1000}"]), max_size=2)
    | json_values,
    "ignoreTagsRegexes": st.lists(st.sampled_from(["rc", "[", "^latest$"]), max_size=2)
    | json_values,
    "allowTags": texts,
})
subscriptions = st.one_of(
    st.builds(lambda kind, body: {kind: body},
              st.sampled_from(["image", "chart", "git", "other"]), sub_bodies),
    json_values)
warehouses = st.builds(
    lambda ns, name, subs, gen: {"metadata": {"namespace": ns, "name": name, "uid": name,
                                              "generation": gen},
                                 "spec": {"subscriptions": subs}},
    st.sampled_from(["p1", "p2"]), st.sampled_from(["w1", "w2", "w3"]),
    st.one_of(st.lists(subscriptions, max_size=4), json_values),
    st.integers(1, 3))


def oracle_ok(obj: dict[str, Any], urls: list[str], tag: str) -> bool:
    """Some subscription of ``obj`` is on one of ``urls`` and takes ``tag``."""
    subs = (obj.get("spec") or {}).get("subscriptions")
    if not isinstance(subs, list):
        return False
    for sub in subs:
        if not isinstance(sub, dict) or len(sub) != 1:
            continue
        kind, body = next(iter(sub.items()))
        if kind not in ("image", "chart") or not isinstance(body, dict):
            continue
        raw = body.get("repoURL")
        if not isinstance(raw, str) or normalize_url(kind, raw) not in urls:
            continue
        compiled = compile_subscription(sub)
        if compiled.error is None and compiled.qualify(tag).ok:
            return True
    return False


def oracle_subscribed(obj: dict[str, Any], urls: list[str]) -> bool:
    """Some image or chart subscription of ``obj`` is on one of ``urls`` (a push
    without tags refreshes it whatever its rules)."""
    subs = (obj.get("spec") or {}).get("subscriptions")
    for sub in subs if isinstance(subs, list) else []:
        kinds = [k for k in sub if k != "name"] if isinstance(sub, dict) else []
        if len(kinds) != 1 or kinds[0] not in ("image", "chart"):
            continue
        body = sub[kinds[0]]
        raw = body.get("repoURL") if isinstance(body, dict) else None
        if isinstance(raw, str) and raw and normalize_url(kinds[0], raw) in urls:
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(warehouses, max_size=6), st.lists(st.sampled_from(REPOS), min_size=1,
                                                  max_size=2),
       st.lists(st.sampled_from(TAGS) | texts, max_size=4), st.sampled_from([None, "p1", "p2"]))
def test_route_never_raises_and_every_match_is_justified(
        objs: list[dict[str, Any]], repos: list[str], tags: list[str],
        project: str | None) -> None:
    count("route() over malformed Warehouses")
    index = WarehouseIndex()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for i, obj in enumerate(objs):
        obj["metadata"]["uid"] = f"uid-{i}"  # a new object each time: never a stale compile
        index.upsert(obj)
        meta = obj["metadata"]
        latest[(meta["namespace"], meta["name"])] = obj
    urls = event_urls([normalize_image(r) for r in repos], repos[0])
    matches = route(index, urls, tags, project)
    assert len({(m.namespace, m.name) for m in matches}) == len(matches)
    if not any(tags):  # no tags: exactly the image/chart subscribers in scope
        expected = {key for key, obj in latest.items()
                    if (project is None or key[0] == project) and oracle_subscribed(obj, urls)}
        assert {(m.namespace, m.name) for m in matches} == expected
        assert all(m.tags == () for m in matches)
        return
    for match in matches:
        assert project is None or match.namespace == project
        assert match.tags and set(match.tags) <= set(tags)
        obj = latest[(match.namespace, match.name)]
        for tag in match.tags:
            assert oracle_ok(obj, urls, tag), (obj, urls, tag)
    # and nothing is missed: every (Warehouse, tag) the oracle accepts is matched
    matched = {(m.namespace, m.name) for m in matches}
    for (ns, name), obj in latest.items():
        if project is not None and ns != project:
            continue
        if any(oracle_ok(obj, urls, t) for t in tags if t):
            assert (ns, name) in matched, (obj, urls, tags)
    assert normalize_chart("oci://x/y") == normalize_image("x/y")


# ---- pathological regexes in linear time ----------------------------------------------------

EVIL = [r"(a+)+$", r"^(a|aa)+$", r"(a|a)*$", r"(a*)*b", r"(.*a){12}", r"^(\w+\s?)*$",
        r"(x+x+)+y", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"(a|b|ab)*c"]


def _qualify(pattern: str, tag: str) -> bool:
    compiled = compile_subscription({"image": {
        "repoURL": "quay.io/a/b", "imageSelectionStrategy": "Lexical",
        "allowTagsRegexes": [pattern], "ignoreTagsRegexes": [pattern + "|zz"]}})
    assert compiled.error is None, compiled.error
    return compiled.qualify(tag).ok


@pytest.mark.parametrize("pattern", EVIL)
def test_pathological_regexes_finish(pattern: str) -> None:
    """A backtracking engine needs ~2^n steps for these on an n-character
    near-miss (hours at n = 30); RE2 runs them in linear time, so 200,000
    characters finish at once. No clock is read: finishing is the assertion
    (a backtracking engine would hang the run), so load on the machine
    cannot fail it."""
    count("pathological regexes")
    for n in (30, 25_000, 200_000):
        _qualify(pattern, "a" * n + "!")


def test_re2_rejects_what_it_cannot_run_in_linear_time() -> None:
    for pattern in (r"(a)\1", r"(?=a)a", r"(?<!b)a", r"a++"):
        compiled = compile_subscription({"image": {
            "repoURL": "quay.io/a/b", "imageSelectionStrategy": "Lexical",
            "allowTagsRegexes": [pattern]}})
        assert compiled.error is not None  # reported, the Warehouse's others unaffected
        assert not compiled.qualify("aa").ok


# ---- the ingress HTTP layer on raw input -------------------------------------------------

SECRET = "fuzz-secret"
PATH = receiver_path("/", "proj", "recv", SECRET)


class _Receivers:
    def __init__(self) -> None:
        owner = Owner("ProjectConfig", "proj", "proj")
        self.table = {PATH: Receiver(owner, "recv", "proj", "sec", PATH, "http://h" + PATH)}

    def lookup(self, path: str) -> Receiver | None:
        return self.table.get(path)

    def readiness(self) -> str | None:
        return None


class _Publisher:
    def __init__(self) -> None:
        self.published = 0

    async def publish(self, event: Any) -> None:
        self.published += 1


class _Server:
    """The real ingress app (stand-in registry and Kafka) on a loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.publisher = _Publisher()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        settings = IngressSettings(max_body_bytes=64 * 1024, read_timeout=1.0)
        handler = WebhookHandler(settings, _Receivers(), self.publisher)
        self.runner = web.AppRunner(build_app(settings, handler, []), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def send(self, request: bytes) -> int:
        """Raw bytes in; the status code out (0: closed without an answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            try:
                sock.sendall(request)
            except OSError:
                pass
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
                    if b"\r\n" in data:
                        break
            except OSError:
                pass
        if not data.startswith(b"HTTP/1."):
            return 0
        return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


header_names = st.sampled_from(["Content-Type", "Content-Encoding", "Transfer-Encoding",
                                "Expect", "X-Forwarded-For", "Host", "Accept-Encoding",
                                "Content-Length", "Connection"]) | st.from_regex(
    r"[A-Za-z-]{1,20}", fullmatch=True)
header_values = st.sampled_from(["application/json", "gzip", "deflate", "br", "chunked",
                                 "100-continue", "identity, gzip", "", "-1", "99999999999"]) \
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["POST", "GET", "PUT", "HEAD", "OPTIONS", "DELETE",
                                   "PATCH", "BREW", "post", "P\x00ST"]))
    target = draw(st.sampled_from([PATH, PATH + "?x=1", PATH.upper(), "/quay/" + "0" * 64,
                                   "/quay/", "/", "*", "http://h" + PATH, PATH + "%00",
                                   "/openapi.json", "/healthz", "/readyz", "/metrics",
                                   "/quay/../" + PATH[6:], "//quay//x"])
                  | st.text(alphabet="/%.aq0z?#", max_size=40).map(lambda t: "/" + t))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""]))
    body_doc = draw(st.one_of(
        st.just({"docker_url": "quay.io/a/b", "updated_tags": ["1.0.0"]}),
        st.dictionaries(st.sampled_from(["docker_url", "updated_tags", "name",
                                         "pruned_image_count"]) | texts,
                        json_values, max_size=4),
        json_values))
    body = orjson.dumps(body_doc) if draw(st.booleans()) else draw(st.binary(max_size=200))
    encoding = draw(st.sampled_from([None, "gzip", "deflate", "bogus"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    headers = [(draw(header_names), draw(header_values)) for _ in range(draw(st.integers(0, 4)))]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    framing = draw(st.sampled_from(["length", "chunked", "wrong-length", "none"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "wrong-length":
        headers.append(("Content-Length", str(len(body) + draw(st.integers(-5, 5)))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1", "replace") + b"Connection: close\r\n\r\n" + body


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_requests())
def test_raw_http_never_gets_a_5xx(server: _Server, request: bytes) -> None:
    count("ingress raw HTTP requests")
    status = server.send(request)
    assert status < 500, (status, request[:300])


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(["docker_url", "updated_tags", "pruned_image_count",
                                        "name", "repository", "namespace"]),
                       st.one_of(json_values, st.lists(texts, max_size=20),
                                 st.text(max_size=1100),
                                 st.lists(st.text(max_size=300), max_size=3)),
                       max_size=6))
def test_mutated_quay_payloads_get_202_or_400(server: _Server, doc: dict[str, Any]) -> None:
    count("ingress mutated Quay payloads")
    body = orjson.dumps(doc)
    request = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    status = server.send(request)
    assert status in (202, 400), (status, doc)


# ---- refresh targets are Kubernetes names ----------------------------------------------------


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z0-9.-]{1,70}", fullmatch=True)),
       st.one_of(st.text(max_size=300), st.from_regex(r"[a-z0-9.-]{1,260}", fullmatch=True)))
def test_a_refresh_can_only_target_the_warehouse_it_names(namespace: str, name: str) -> None:
    """Whatever a foreign producer writes, an accepted name stays one path segment of
    the Warehouse collection (no "/", "..", "%", upper case...)."""
    from pushrelay.core.events import WarehouseRef
    from pushrelay.infra.kube.resources import WAREHOUSE
    from refresher.patcher import invalid_ref

    count("refresh target names")
    ref = WarehouseRef.model_construct(namespace=namespace, name=name)
    if invalid_ref(ref) is not None:
        return
    path = WAREHOUSE.path(namespace, name)
    assert path == f"/apis/kargo.akuity.io/v1alpha1/namespaces/{namespace}/warehouses/{name}"
    for segment in (namespace, name):
        assert segment not in (".", "..") and "/" not in segment and "%" not in segment
        assert segment == segment.lower() and segment.isascii()
