"""One aiobotocore client per store or queue, created on first use and closed with its owner."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config


class LazyAwsClient:
    """Creates the client on the first ``get()`` (inside the running loop) and closes it in ``close()``.

    Credentials come from botocore's usual chain (environment, web identity in the cluster).
    """

    def __init__(self, service: str, *, region: str, endpoint_url: str | None, config: Config | None = None):
        self._service = service
        self._region = region
        self._endpoint_url = endpoint_url
        self._config = config or Config(retries={"mode": "standard", "max_attempts": 3})
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        """The client, created once."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        self._service,
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
                )
                self._stack = stack
        return self._client

    async def close(self) -> None:
        """Closes the client's connections; a later ``get()`` would open a new one."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
