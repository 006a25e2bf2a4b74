"""Who is calling: every InferenceService call is authenticated by a grpc.aio.ServerInterceptor before its handler.

The interceptor wraps the service's method handlers (as grpc's own auth examples do, but keeping the call's
context: a client certificate is in `context.auth_context()`, which an interceptor's call details lack). A caller
the access file does not accept gets UNAUTHENTICATED before anything of its call is read; an accepted one runs
the handler with its `Caller` (identity and credentials) in `CALLER`, a context variable of the call's task.
Other services on the same server (health, reflection) stay open. The access file is re-read when it changes;
`Caller.still_accepted` tells an open call whether the file accepts it now (services/cloud/access.py).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from splitinfer.services.cloud.access import (
    AccessPolicy,
    AuthenticationError,
    Identity,
    peer_certificate_names,
    peer_certificate_pem,
)
from splitinfer.services.cloud.status import abort


class CallCredentials:
    """What a call authenticated with, kept so that an access file reloaded while it is open applies to it too."""

    def __init__(self, context: grpc.aio.ServicerContext, policy: AccessPolicy) -> None:
        auth_context = context.auth_context()
        self.metadata = tuple(context.invocation_metadata() or ())
        self.peer_names = peer_certificate_names(auth_context)
        self.peer_certificate = peer_certificate_pem(auth_context)
        self.policy = policy

    def authenticate(self) -> Identity:
        """The identity these credentials prove under the current policy; AuthenticationError if none."""
        return self.policy.authenticate(self.metadata, self.peer_names, self.peer_certificate)


@dataclass
class Caller:
    """The authenticated caller of the current call."""

    identity: Identity
    credentials: CallCredentials

    def still_accepted(self, policy: AccessPolicy) -> None:
        """Check the credentials against `policy` if it changed since; AuthenticationError if it refuses them now."""
        if policy is self.credentials.policy:
            return
        self.credentials.policy = policy
        self.credentials.authenticate()


CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("splitinfer_caller")


def current_caller() -> Caller:
    """The caller of the call this task serves; a RuntimeError if the interceptor did not authenticate it."""
    try:
        return CALLER.get()
    except LookupError:
        raise RuntimeError("this call was not authenticated: serve InferenceService with an AuthenticationInterceptor "
                           "(CloudServer does).") from None


class AuthenticationInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call of the services whose full names start with `prefix`, before their handlers run."""

    def __init__(self, access: Callable[[], AccessPolicy], prefix: str,
                 on_refused: Callable[[], None] = lambda: None) -> None:
        self.access = access
        self.prefix = prefix
        self.on_refused = on_refused

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self.prefix):
            return handler
        return _authenticating(handler, self._authenticate)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        """Set CALLER for this call, or end it with UNAUTHENTICATED."""
        credentials = CallCredentials(context, self.access())
        try:
            identity = credentials.authenticate()
        except AuthenticationError as exc:
            self.on_refused()
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc), exc.reason)
        CALLER.set(Caller(identity, credentials))


def _authenticating(handler: grpc.RpcMethodHandler,
                    authenticate: Callable[[grpc.aio.ServicerContext], Awaitable[None]]) -> grpc.RpcMethodHandler:
    """The same handler, authenticating the call first (one wrapper per kind of call)."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await authenticate(context)
            return await handler.unary_unary(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, **codecs)
    if handler.stream_unary is not None:
        async def stream_unary(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> Any:
            await authenticate(context)
            return await handler.stream_unary(requests, context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, **codecs)
    if handler.unary_stream is not None:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
            await authenticate(context)
            async for response in handler.unary_stream(request, context):
                yield response
        return grpc.unary_stream_rpc_method_handler(unary_stream, **codecs)

    async def stream_stream(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> AsyncIterator:
        await authenticate(context)
        async for response in handler.stream_stream(requests, context):
            yield response
    return grpc.stream_stream_rpc_method_handler(stream_stream, **codecs)
