"""LocalEventQueue: durable, leased delivery that two processes can share safely."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from sd_common.objectstore import LocalEventQueue


async def test_send_receive_delete(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    ids = [await queue.send(f"message {n}") for n in range(5)]
    got = await queue.receive(max_messages=3, wait_s=0)
    assert [m.body for m in got] == ["message 0", "message 1", "message 2"]  # arrival order
    assert [m.message_id for m in got] == ids[:3]
    assert {m.receive_count for m in got} == {1}
    rest = await queue.receive(max_messages=10, wait_s=0)
    assert [m.body for m in rest] == ["message 3", "message 4"]
    for message in got + rest:
        await queue.delete(message.receipt)
    assert await queue.pending() == 0
    assert await queue.receive(wait_s=0) == []


async def test_messages_survive_a_restart(tmp_path: Path) -> None:
    await LocalEventQueue(tmp_path / "q").send("durable")
    (message,) = await LocalEventQueue(tmp_path / "q").receive(wait_s=0)
    assert message.body == "durable"


class SettableClock:
    """A wall clock in nanoseconds that moves only when the test says, so a lease ends exactly on cue."""

    def __init__(self) -> None:
        self.now_ns = time.time_ns()

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


async def test_an_expired_lease_redelivers(tmp_path: Path) -> None:
    clock = SettableClock()
    queue = LocalEventQueue(tmp_path / "q", clock_ns=clock)
    await queue.send("work")
    (first,) = await queue.receive(wait_s=0, visibility_timeout_s=30)
    clock.advance(29.999)
    assert await queue.receive(wait_s=0) == []  # hidden while leased, up to the last moment
    # A consumer that crashed never deletes; the message comes back once the lease ends.
    clock.advance(0.001)
    (second,) = await queue.receive(wait_s=0, visibility_timeout_s=60)
    assert second.message_id == first.message_id and second.body == "work"
    assert second.receive_count == 2 and second.receipt != first.receipt
    # The first consumer's late delete must not remove the message the second one now holds.
    await queue.delete(first.receipt)
    assert await queue.pending() == 1
    await queue.delete(second.receipt)
    assert await queue.pending() == 0


async def test_two_queues_on_one_directory_share_the_lease_clock(tmp_path: Path) -> None:
    """A lease taken through one handle hides the message from another (another process, in production)."""
    clock = SettableClock()
    a, b = (LocalEventQueue(tmp_path / "q", clock_ns=clock) for _ in range(2))
    await a.send("work")
    (held,) = await a.receive(wait_s=0, visibility_timeout_s=10)
    assert await b.receive(wait_s=0) == []
    clock.advance(10)
    (taken,) = await b.receive(wait_s=0)
    assert taken.message_id == held.message_id and taken.receive_count == 2


async def test_receive_waits_for_a_message(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    started = time.monotonic()
    assert await queue.receive(wait_s=0.2) == []
    assert time.monotonic() - started >= 0.2

    async def send_later() -> None:
        await asyncio.sleep(0.15)
        await queue.send("late")

    sender = asyncio.create_task(send_later())
    started = time.monotonic()
    # It returns when the message comes, not when the wait ends: the margin is wide for a loaded machine.
    (message,) = await queue.receive(wait_s=120)
    assert message.body == "late" and time.monotonic() - started < 60
    await sender


async def test_receipts_are_checked(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    for bad in ("../../etc/passwd", "x", ""):
        with pytest.raises(ValueError, match="not a receipt"):
            await queue.delete(bad)


_CONSUMER = """
import asyncio, json, sys, time
from pathlib import Path
from sd_common.objectstore import LocalEventQueue

def wait_for(path):
    deadline = time.monotonic() + 120
    while not Path(path).exists():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting for {path}")
        time.sleep(0.002)

async def main(directory, me, other, go):
    queue = LocalEventQueue(Path(directory))
    Path(me + ".ready").touch()
    wait_for(go)
    got = []
    while messages := await queue.receive(max_messages=2, wait_s=0, visibility_timeout_s=600):
        for message in messages:
            got.append([message.message_id, message.receive_count])
        if not Path(me + ".first").exists():
            # Rendezvous: each holds its first batch (leased, not deleted) until the other has taken one
            # too, so both are surely racing for the rest however the machine schedules them.
            Path(me + ".first").touch()
            wait_for(other + ".first")
        for message in messages:
            await queue.delete(message.receipt)
    Path(me + ".json").write_text(json.dumps(got))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_never_get_the_same_message(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    sent = {await queue.send(json.dumps({"n": n})) for n in range(400)}
    go = tmp_path / "go"
    names = [str(tmp_path / f"consumer{i}") for i in range(2)]
    consumers = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _CONSUMER, str(tmp_path / "q"), me, other,
                                             str(go))
        for me, other in (names, names[::-1])
    ]
    # Both have imported and opened the queue before either may start.
    deadline = time.monotonic() + 120
    while not all(Path(n + ".ready").exists() for n in names):
        assert all(c.returncode is None for c in consumers), "a consumer exited before it was ready"
        assert time.monotonic() < deadline, "the consumers did not start within 120 s"
        await asyncio.sleep(0.01)
    go.touch()
    for consumer in consumers:
        assert await asyncio.wait_for(consumer.wait(), 120) == 0
    received = [json.loads(Path(n + ".json").read_text()) for n in names]
    ids = [{m for m, _ in got} for got in received]
    assert all(ids), [len(got) for got in received]  # both consumers got work
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == sent
    assert sum(len(got) for got in received) == len(sent)  # no message twice, even within one process
    assert all(count == 1 for got in received for _, count in got)
    assert await queue.pending() == 0
