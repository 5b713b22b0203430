"""Several routers in one consumer group: every event routed, none lost.

Two routers share the partitions; halfway through, one is stopped gracefully
(its partitions move to the survivor) and a third joins. Every event must
produce its refresh request; duplicates are counted (allowed: at-least-once).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from kubernetes_asyncio.client import ApiClient

from pushrelay.core.events import PushEvent, encode
from pushrelay.infra.settings import Settings
from router.service import RouterService
from tests.integration.conftest import eventually
from tests.integration.test_router_flow import (
    Harness,
    create_warehouse,
    image,
    push_event,
    warehouse,
)

REPOS = 12
EVENTS = 3000


async def test_two_routers_one_group_none_lost(settings: Settings, kube: ApiClient,
                                               namespace: str) -> None:
    h = Harness(settings)
    await h.start()
    try:
        for i in range(REPOS):
            await create_warehouse(kube, namespace,
                                   warehouse(f"w{i}", image(f"quay.io/ns/repo{i}")))
        first = h.routers[0]
        second = await h.add_router()
        await eventually(lambda: all(h.indexed(namespace, f"w{i}") for i in range(REPOS)),
                         within=10)

        def assigned(router: RouterService) -> int:
            consumer = router._consumer  # noqa: SLF001 - the test watches the hand-over
            return len(consumer.assignment()) if consumer is not None else 0
        # Both members hold partitions before anything is published.
        await eventually(lambda: assigned(first) + assigned(second) == 3
                         and assigned(first) > 0 and assigned(second) > 0, within=30)
        events = [push_event(["v1.0.0"], namespace, f"quay.io/ns/repo{i % REPOS}")
                  for i in range(EVENTS)]

        async def publish(batch: list[PushEvent]) -> None:
            futures = [await h.producer.send(settings.push_topic, encode(e), key=e.key)
                       for e in batch]
            await asyncio.gather(*futures)

        half = EVENTS // 2
        await publish(events[:half])
        await eventually(lambda: first.events > 0 and second.events > 0, within=30)
        # Stop one router mid-stream (graceful hand-over), then let a third join.
        await asyncio.gather(second.stop(), publish(events[half:]))
        third = await h.add_router()

        wanted = {e.id for e in events}
        await eventually(lambda: wanted <= {r.cause.event for r in h.requests.requests},
                         within=60)
        seen = Counter(r.cause.event for r in h.requests.requests)
        assert set(seen) == wanted  # none lost, nothing unexpected
        duplicates = sum(n - 1 for n in seen.values())
        routed = first.events + second.events + third.events
        assert routed >= EVENTS
        assert duplicates <= routed - EVENTS  # a duplicate is a re-routed event
        print(f"\nrouted={routed} events={EVENTS} duplicates={duplicates} "
              f"split={first.events}/{second.events}/{third.events}")
        assert all(not r.crashed.is_set() for r in h.routers)
    finally:
        await h.stop()
