"""Queues of object-created events: SQS in the cluster, a directory on one machine.

Both give at-least-once delivery: a received message is hidden for ``visibility_timeout_s`` and comes
back (with a higher ``receive_count``) unless it is deleted in time, so a crashed consumer loses
nothing and a slow one may see a message twice. Consumers must be idempotent.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from sd_common.objectstore.aws import LazyAwsClient
from sd_common.objectstore.durable import write_atomically


@dataclass(frozen=True)
class QueueMessage:
    """A received message; pass ``receipt`` to ``delete`` once it is handled."""

    message_id: str
    receipt: str
    body: str
    receive_count: int  # 1 on first delivery


class EventQueue(ABC):
    """The consumer side of an event queue, plus ``send`` for producers and tests."""

    @abstractmethod
    async def send(self, body: str) -> str:
        """Enqueues ``body``; returns the message id."""

    @abstractmethod
    async def receive(
        self, *, max_messages: int = 10, wait_s: float = 20, visibility_timeout_s: float = 60
    ) -> list[QueueMessage]:
        """Up to ``max_messages`` messages, waiting up to ``wait_s`` for the first; [] if none came."""

    @abstractmethod
    async def delete(self, receipt: str) -> None:
        """Removes a received message for good (a no-op if its lease already passed to another consumer)."""

    @abstractmethod
    async def close(self) -> None:
        """Releases connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# Message files are named <id>; leased ones <id>~<receive count>~<lease end, unix ns>. The id starts
# with the send time so a sorted directory listing is (roughly) arrival order.
_ID = r"[0-9]{20}-[0-9]{1,10}-[0-9a-f]{12}"
_ID_RE = re.compile(_ID)
_LEASED_RE = re.compile(rf"({_ID})~([0-9]{{1,9}})~([0-9]{{1,20}})")
_POLL_S = 0.05


class LocalEventQueue(EventQueue):
    """A durable queue in a directory, safe for several processes on one machine.

    Like a maildir: ``send`` writes ``tmp/<id>`` and renames it into ``ready/``; ``receive`` takes a
    message by renaming it into ``leased/`` under a name carrying its receive count and lease end.
    ``rename`` is atomic, so of two processes racing for one message exactly one wins; an expired
    lease is taken over the same way. The receipt is the leased name, so a consumer whose lease ran
    out cannot delete the message from under the consumer that holds it now.
    """

    def __init__(self, directory: Path, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        # clock_ns: the wall clock leases are stamped and checked with (shared by every process using
        # the directory); tests pass a settable one so a lease ends exactly when they say.
        self.directory = Path(directory)
        self._clock_ns = clock_ns
        self._tmp = self.directory / "tmp"
        self._ready = self.directory / "ready"
        self._leased = self.directory / "leased"
        for folder in (self._tmp, self._ready, self._leased):
            folder.mkdir(parents=True, exist_ok=True)

    async def send(self, body: str) -> str:
        """Writes the message durably (fsync) and makes it visible atomically."""
        return await asyncio.to_thread(self._send, body)

    def _send(self, body: str) -> str:
        message_id = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(6)}"
        write_atomically(self._ready / message_id, body.encode(), self._tmp)
        return message_id

    async def receive(
        self, *, max_messages: int = 10, wait_s: float = 20, visibility_timeout_s: float = 60
    ) -> list[QueueMessage]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            messages = await asyncio.to_thread(self._lease, max_messages, visibility_timeout_s)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            await asyncio.sleep(min(_POLL_S, remaining))

    def _lease(self, max_messages: int, visibility_timeout_s: float) -> list[QueueMessage]:
        now_ns = self._clock_ns()
        candidates: list[tuple[str, Path, int]] = []  # (message id, current path, receive count so far)
        for name in os.listdir(self._ready):
            if _ID_RE.fullmatch(name):
                candidates.append((name, self._ready / name, 0))
        for name in os.listdir(self._leased):
            match = _LEASED_RE.fullmatch(name)
            if match and int(match[3]) <= now_ns:
                candidates.append((match[1], self._leased / name, int(match[2])))
        candidates.sort()
        lease_end_ns = now_ns + max(0, int(visibility_timeout_s * 1e9))
        messages = []
        for message_id, path, count in candidates:
            receipt = f"{message_id}~{count + 1}~{lease_end_ns}"
            try:
                os.rename(path, self._leased / receipt)  # the atomic step: one process wins
                body = (self._leased / receipt).read_bytes().decode()
            except FileNotFoundError:
                continue  # another consumer took it first (or took it over after a very short lease)
            messages.append(QueueMessage(message_id, receipt, body, count + 1))
            if len(messages) == max_messages:
                break
        return messages

    async def delete(self, receipt: str) -> None:
        if not _LEASED_RE.fullmatch(receipt):
            raise ValueError(f"{receipt!r} is not a receipt from this queue")
        try:
            os.unlink(self._leased / receipt)
        except FileNotFoundError:
            pass  # already deleted, or the lease expired and another consumer holds the message now

    async def pending(self) -> int:
        """Messages not yet deleted, leased or not (for tests and health checks)."""
        return len(os.listdir(self._ready)) + len(os.listdir(self._leased))

    async def close(self) -> None:
        return None


class SqsEventQueue(EventQueue):
    """An SQS queue through aiobotocore, with long polling."""

    def __init__(self, queue_url: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.queue_url = queue_url
        self._client = LazyAwsClient("sqs", region=region, endpoint_url=endpoint_url)

    async def send(self, body: str) -> str:
        sqs = await self._client.get()
        response = await sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return response["MessageId"]

    async def receive(
        self, *, max_messages: int = 10, wait_s: float = 20, visibility_timeout_s: float = 60
    ) -> list[QueueMessage]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        sqs = await self._client.get()
        # SQS limits: at most 10 messages and 20 s of long polling per call, whole seconds only.
        response = await sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(max_messages, 10),
            WaitTimeSeconds=min(20, max(0, math.ceil(wait_s))),
            VisibilityTimeout=min(43_200, max(0, math.ceil(visibility_timeout_s))),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            QueueMessage(
                message_id=m["MessageId"],
                receipt=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    async def delete(self, receipt: str) -> None:
        sqs = await self._client.get()
        await sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

    async def close(self) -> None:
        await self._client.close()
