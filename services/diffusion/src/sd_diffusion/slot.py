"""A single-slot buffer that keeps only the newest item: the model never works through a queue.

Between receiving frames and the model, and between the model and the sender, frames must never
queue: a slower consumer would otherwise fall further behind with every frame (the creeping latency
users of real-time video servers report). `put` replaces whatever the slot holds and counts it as
dropped; `get` waits for an item and takes it.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed: nothing more will come."""


class LatestSlot(Generic[T]):
    """Holds at most one item; a new one replaces the old (counted in `dropped`). One event loop only."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._ready = asyncio.Event()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Stores `item`, dropping the one not yet taken, if any; True when one was dropped."""
        if self._closed:
            raise SlotClosed("put on a closed slot")
        dropped = self._full
        if dropped:
            self.dropped += 1
        self._item, self._full = item, True
        self.put_count += 1
        self._ready.set()
        return dropped

    async def get(self) -> T:
        """The newest item, once there is one; SlotClosed when closed and empty."""
        while not self._full:
            if self._closed:
                raise SlotClosed("the slot is closed")
            self._ready.clear()
            await self._ready.wait()
        item, self._item, self._full = self._item, None, False
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Wakes every waiter; later gets raise SlotClosed once the slot is empty."""
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """Whether an item waits to be taken."""
        return self._full
