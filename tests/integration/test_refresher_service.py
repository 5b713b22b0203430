"""The refresher against the real devstack: the bus in, Warehouse patches out.

Patches are counted by a watch on the Warehouses (what the API server saw),
not by trusting the service's own counters.
"""

from __future__ import annotations

import logging
import time
import uuid

import orjson
from kubernetes_asyncio.client import ApiClient

from pushrelay.core.deliveries import Delivery
from pushrelay.core.events import decode_dead_letter
from pushrelay.infra.bus.api import Bus
from pushrelay.infra.deliveries import read_deliveries
from pushrelay.infra.settings import Settings
from tests.integration.conftest import eventually, make_settings
from tests.integration.refresher_support import (
    REPO,
    all_committed,
    create_warehouses,
    grant_refresher_rights,
    metric,
    produce,
    read_topic,
    request,
    running_refresher,
    warehouse_events,
    watching,
)

log = logging.getLogger(__name__)


async def test_a_burst_of_500_requests_for_one_warehouse_costs_at_most_2_patches_a_window(
    kube: ApiClient, namespace: str, settings: Settings, bus: Bus,
) -> None:
    await create_warehouses(kube, namespace, ["app"])
    async with watching(kube, namespace) as watch, running_refresher(settings, bus=bus) as service:
        await eventually(lambda: service.marks.partitions(), within=30)
        t0 = time.monotonic()
        sent = await produce(settings, [request(namespace, "app", f"d{i}") for i in range(500)],
                             bus=bus)
        # A loaded machine may stretch the burst over more than one coalescing
        # window; each window it spans allows one more (trailing) patch.
        windows = int((time.monotonic() - t0) // settings.refresh_min_interval)
        await eventually(lambda: watch.refreshed_after(sent), within=15)
        await eventually(lambda: service.marks.outstanding() == 0, within=15)
        await eventually(lambda: all_committed(settings), within=15)
        patches = watch.patches("app")
        log.info("500 requests -> %d patches (burst over %d extra windows)", patches, windows)
        assert 1 <= patches <= 2 + windows
        # one aggregated Event names the repo, the tags and a delivery
        events = await eventually(lambda: warehouse_events(kube, namespace), within=20)
        refreshed = [e for e in events if e["reason"] == "Refreshed"]
        assert refreshed and len(refreshed) <= patches
        message = refreshed[-1]["message"]
        assert REPO in message and "v1.0.0" in message and "delivery d" in message
        assert refreshed[-1]["involvedObject"]["name"] == "app"
        assert refreshed[-1]["source"]["component"] == "pushrelay-refresher"
        # `pushrelay deliveries` sees each delivery refreshed
        rows = await eventually(lambda: _deliveries(settings, "d0", "d499", bus=bus), within=15)
        assert all(row.refreshed == [f"{namespace}/app"] for row in rows)


async def test_50_warehouses_times_20_requests(
    kube: ApiClient, namespace: str, settings: Settings, bus: Bus,
) -> None:
    names = [f"wh-{i:02d}" for i in range(50)]
    await create_warehouses(kube, namespace, names)
    async with watching(kube, namespace) as watch, running_refresher(settings, bus=bus) as service:
        await eventually(lambda: service.marks.partitions(), within=30)
        t0 = time.monotonic()
        sent = await produce(settings, [request(namespace, names[i % 50], f"d{i}")
                                        for i in range(1000)], bus=bus)
        produced = time.monotonic() - t0
        await eventually(lambda: watch.refreshed_after(sent), within=30)
        refreshed = time.monotonic() - t0
        await eventually(lambda: service.marks.outstanding() == 0, within=30)
        await eventually(lambda: all_committed(settings), within=15)
        drained = time.monotonic() - t0
        total = watch.patches()
        log.warning("1000 requests over 50 warehouses: produced in %.2fs, all refreshed "
                    "in %.2fs, drained+committed in %.2fs, %d patches (qps=%s burst=%s)",
                    produced, refreshed, drained, total, settings.refresh_qps,
                    settings.refresh_burst)
        assert all(watch.patches(n) >= 1 for n in names)
        assert total <= 100


async def test_invalid_and_unknown_requests_are_dead_lettered_and_skipped(
    kube: ApiClient, namespace: str, settings: Settings, bus: Bus,
) -> None:
    await create_warehouses(kube, namespace, ["ok"])
    dropped = metric("pushrelay_refresher_dropped_total")
    async with watching(kube, namespace) as watch, running_refresher(settings, bus=bus) as service:
        wrong_schema = orjson.dumps({"schema": "pushrelay.refresh/v9", "id": "x"})
        sent = await produce(settings, [
            b"not json", wrong_schema,
            request(namespace, "missing", "d-missing"),  # no such Warehouse: dropped
            request(namespace, "ok", "d-ok"),
        ], bus=bus)
        await eventually(lambda: watch.refreshed_after({"ok": sent["ok"]}), within=15)
        letters = [decode_dead_letter(raw) for raw in
                   await read_topic(settings, settings.dead_letter_topic, 2, bus=bus)]
        reasons = sorted(letter.reason for letter in letters)
        assert all(letter.stage == "refresher" for letter in letters)
        assert reasons[0].startswith("not JSON") and "unknown schema" in reasons[1]
        await eventually(lambda: metric("pushrelay_refresher_dropped_total") == dropped + 1,
                         within=15)
        [row] = await eventually(lambda: _deliveries(settings, "d-missing", bus=bus), within=15)
        assert row.failed == [f"{namespace}/missing"] and "not found" in (row.reason or "")
        await eventually(lambda: service.marks.outstanding() == 0, within=15)
        await eventually(lambda: all_committed(settings), within=15)
        assert not service.crashed.is_set()


async def test_forbidden_patch_is_dead_lettered_and_the_service_stays_healthy(
    kube: ApiClient, namespace: str, devstack_env: dict[str, str], topic_prefix: str, bus: Bus,
) -> None:
    from pushrelay_devstack.stack import mint_user_kubeconfig
    from tests.devstack_fixtures import state_dir_of

    user = f"no-patch-{uuid.uuid4().hex[:6]}"
    kubeconfig = mint_user_kubeconfig(state_dir_of(devstack_env), user)
    settings = make_settings(devstack_env, topic_prefix, kubeconfig=str(kubeconfig))
    names = ["a", "b", "c"]
    await create_warehouses(kube, namespace, names)
    async with watching(kube, namespace) as watch, running_refresher(settings, bus=bus) as service:
        await produce(settings, [request(namespace, n, f"d-{n}") for n in names], bus=bus)
        letters = [decode_dead_letter(raw) for raw in
                   await read_topic(settings, settings.dead_letter_topic, 3, bus=bus)]
        assert sorted(letter.key or "" for letter in letters) == [
            f"{namespace}/{n}" for n in names]
        assert all("403" in letter.reason and letter.stage == "refresher" for letter in letters)
        assert all(orjson.loads(letter.payload)["warehouse"]["namespace"] == namespace
                   for letter in letters)
        await eventually(lambda: all_committed(settings), within=15)
        assert watch.patches() == 0
        [row] = await eventually(lambda: _deliveries(settings, "d-a", bus=bus), within=15)
        assert row.failed == [f"{namespace}/a"] and "403" in (row.reason or "")
        assert not service.crashed.is_set() and service.readiness() is None

        # grant the right: the same service now refreshes
        await grant_refresher_rights(kube, namespace, user)
        sent = await produce(settings, [request(namespace, "a", "d-after-grant")], bus=bus)
        await eventually(lambda: watch.refreshed_after(sent), within=30)
        assert not service.crashed.is_set()


async def test_graceful_stop_commits_and_a_restart_repatches_nothing(
    kube: ApiClient, namespace: str, settings: Settings, bus: Bus,
) -> None:
    names = [f"w{i}" for i in range(5)]
    await create_warehouses(kube, namespace, names)
    async with watching(kube, namespace) as watch:
        async with running_refresher(settings, bus=bus):
            sent = await produce(settings, [request(namespace, n, f"d-{n}") for n in names],
                                 bus=bus)
            await eventually(lambda: watch.refreshed_after(sent), within=30)
        assert await all_committed(settings)  # committed by stop(), not by luck
        before = watch.patches()
        async with running_refresher(settings, bus=bus) as second:
            await eventually(lambda: second.marks.partitions(), within=30)
            extra = await produce(settings, [request(namespace, "w0", "d-next")], bus=bus)
            await eventually(lambda: watch.refreshed_after(extra), within=30)
        assert watch.patches() == before + 1  # only the new request: nothing redone


async def test_two_replicas_share_the_partitions_and_hand_over_on_stop(
    kube: ApiClient, namespace: str, settings: Settings, kafka_bus: Bus,
) -> None:
    bus = kafka_bus  # several members of one group: Kafka only
    names = [f"r{i:02d}" for i in range(12)]
    await create_warehouses(kube, namespace, names)
    async with watching(kube, namespace) as watch, running_refresher(settings, bus=bus) as one:
        async with running_refresher(settings, bus=bus) as two:
            await eventually(lambda: one.marks.partitions() and two.marks.partitions()
                             and len(one.marks.partitions()) + len(two.marks.partitions())
                             == settings.topic_partitions, within=60)
            sent = await produce(settings, [request(namespace, n, f"a-{n}") for n in names],
                                 bus=bus)
            await eventually(lambda: watch.refreshed_after(sent), within=30)
            assert one.reporter and two.reporter
            # The watch can see a patch before its replica has counted it.
            reporters = (one.reporter, two.reporter)
            await eventually(lambda: sum(r.patched for r in reporters) >= len(names), within=30)
        # two stopped gracefully: its partitions move to one
        await eventually(lambda: len(one.marks.partitions()) == settings.topic_partitions,
                         within=60)
        sent = await produce(settings, [request(namespace, n, f"b-{n}") for n in names], bus=bus)
        await eventually(lambda: watch.refreshed_after(sent), within=30)
        await eventually(lambda: all_committed(settings), within=15)
        assert watch.patches() <= 2 * len(names) + settings.topic_partitions


async def _deliveries(settings: Settings, *ids: str, bus: Bus) -> list[Delivery] | None:
    """The delivery rows of ``ids`` once every one has a refresher outcome."""
    rows = {r.delivery: r for r in await read_deliveries(bus, settings, limit=100_000)}
    found = [rows[i] for i in ids if i in rows and (rows[i].refreshed or rows[i].failed)]
    return found if len(found) == len(ids) else None
