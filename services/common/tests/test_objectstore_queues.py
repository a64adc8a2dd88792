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


async def test_an_expired_lease_redelivers(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    await queue.send("work")
    (first,) = await queue.receive(wait_s=0, visibility_timeout_s=0.3)
    assert await queue.receive(wait_s=0) == []  # hidden while leased
    # A consumer that crashed never deletes; the message comes back once the lease ends.
    (second,) = await queue.receive(wait_s=2, visibility_timeout_s=60)
    assert second.message_id == first.message_id and second.body == "work"
    assert second.receive_count == 2 and second.receipt != first.receipt
    # The first consumer's late delete must not remove the message the second one now holds.
    await queue.delete(first.receipt)
    assert await queue.pending() == 1
    await queue.delete(second.receipt)
    assert await queue.pending() == 0


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
    (message,) = await queue.receive(wait_s=10)
    assert message.body == "late" and time.monotonic() - started < 2
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

async def main(directory, out, go):
    queue = LocalEventQueue(Path(directory))
    while not Path(go).exists():
        time.sleep(0.002)
    got = []
    while messages := await queue.receive(max_messages=2, wait_s=0, visibility_timeout_s=60):
        for message in messages:
            got.append([message.message_id, message.receive_count])
            await queue.delete(message.receipt)
    Path(out).write_text(json.dumps(got))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_never_get_the_same_message(tmp_path: Path) -> None:
    queue = LocalEventQueue(tmp_path / "q")
    sent = {await queue.send(json.dumps({"n": n})) for n in range(400)}
    go = tmp_path / "go"
    consumers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CONSUMER, str(tmp_path / "q"), str(tmp_path / f"out{i}"), str(go))
        for i in range(2)
    ]
    await asyncio.sleep(0.8)  # both processes are importing and then spinning on the start signal
    go.touch()
    for consumer in consumers:
        assert await asyncio.wait_for(consumer.wait(), 30) == 0
    received = [json.loads((tmp_path / f"out{i}").read_text()) for i in range(2)]
    ids = [{m for m, _ in got} for got in received]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == sent
    assert sum(len(got) for got in received) == len(sent)  # no message twice, even within one process
    assert all(count == 1 for got in received for _, count in got)
    assert await queue.pending() == 0
