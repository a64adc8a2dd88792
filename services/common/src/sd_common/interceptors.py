"""gRPC server interceptors that wrap each method's handler, made once per method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc


class MethodWrappingInterceptor(grpc.aio.ServerInterceptor):
    """Gives every call of a method the wrapper ``_wrap`` made for its handler.

    A method's handler is the same object call after call, so its wrapper is made once and kept
    (made again only if the handler changes), not on every call.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped
