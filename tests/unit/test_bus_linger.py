"""The cross-partition linger (pushrelay/infra/bus/linger.py), on a recording fake client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pushrelay.infra.bus.api import RecordRejected
from pushrelay.infra.bus.linger import Gather


class Client:
    """Records what was handed on, and in which loop turn (a counter the test bumps)."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.acks: list[asyncio.Future[None]] = []
        self.refuse: set[bytes] = set()
        self.stall: asyncio.Event | None = None
        self.entered = asyncio.Event()  # a flush reached the client
        self.changed = asyncio.Condition()

    async def send_now(self, topic: str, value: bytes, key: bytes | None,
                       partition: int | None) -> asyncio.Future[None]:
        self.entered.set()
        if self.stall is not None:
            await self.stall.wait()
        if value in self.refuse:
            raise RecordRejected("too large")
        self.handed.append((topic, value, key, partition))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        async with self.changed:
            self.changed.notify_all()
        return ack

    async def until(self, check: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), 5)


async def test_sends_in_a_window_are_handed_on_together_in_order() -> None:
    client = Client()
    gather = Gather(0.01, client.send_now)
    futures = [gather.hold("t", b"%d" % i, key=b"k%d" % (i % 3)) for i in range(5)]
    assert client.handed == []  # held, not sent
    await client.until(lambda: len(client.handed) == 5)
    assert [v for _, v, _, _ in client.handed] == [b"0", b"1", b"2", b"3", b"4"]
    assert not any(f.done() for f in futures)  # durable only on the client's ack
    for ack in client.acks:
        ack.set_result(None)
    await asyncio.gather(*futures)
    await gather.close()


async def test_a_refused_record_fails_its_own_future_only() -> None:
    client = Client()
    client.refuse.add(b"bad")
    gather = Gather(0.005, client.send_now)
    good, bad = gather.hold("t", b"good"), gather.hold("t", b"bad")
    with pytest.raises(RecordRejected):
        await asyncio.wait_for(bad, 5)
    client.acks[0].set_result(None)
    await asyncio.wait_for(good, 5)
    await gather.close()


async def test_a_client_error_reaches_the_future() -> None:
    client = Client()
    gather = Gather(0.005, client.send_now)
    future = gather.hold("t", b"x")
    await client.until(lambda: bool(client.acks))
    client.acks[0].set_exception(RecordRejected("no"))
    with pytest.raises(RecordRejected):
        await asyncio.wait_for(future, 5)
    await gather.close()


async def test_flushes_keep_their_order_when_one_stalls() -> None:
    client = Client()
    client.stall = asyncio.Event()
    gather = Gather(0.001, client.send_now)
    gather.hold("t", b"first")
    await asyncio.wait_for(client.entered.wait(), 5)  # the first flush is in the client
    gather.hold("t", b"second")
    closing = asyncio.create_task(gather.close())  # flushes "second", behind the first
    client.stall.set()
    await asyncio.wait_for(closing, 5)
    assert [v for _, v, _, _ in client.handed] == [b"first", b"second"]


async def test_close_hands_on_what_is_held_and_is_idempotent() -> None:
    client = Client()
    gather = Gather(60.0, client.send_now)  # the window would never run out in the test
    gather.hold("t", b"x", partition=2)
    await gather.close()
    assert client.handed == [("t", b"x", None, 2)]
    await gather.close()
    assert gather.closed
    with pytest.raises(AssertionError):
        gather.hold("t", b"late")


async def test_a_full_window_flushes_at_once_and_the_next_starts_afresh() -> None:
    client = Client()
    gather = Gather(60.0, client.send_now, max_records=3)  # only the cap can flush
    for i in range(4):
        gather.hold("t", b"%d" % i)
    await client.until(lambda: len(client.handed) == 3)
    assert [v for _, v, _, _ in client.handed] == [b"0", b"1", b"2"]
    await gather.close()  # "3" was held in a window of its own
    assert [v for _, v, _, _ in client.handed] == [b"0", b"1", b"2", b"3"]


def test_a_window_must_be_positive_and_a_cap_not_negative() -> None:
    with pytest.raises(ValueError):
        Gather(0, Client().send_now)
    with pytest.raises(ValueError):
        Gather(0.01, Client().send_now, max_records=-1)
