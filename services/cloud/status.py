"""Ending a call with a rich status: the google.rpc ErrorInfo (reason, domain) and RetryInfo every refusal carries.

The one place that builds such statuses, for the servicer and the authentication interceptor alike.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "splitinfer.v1"


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, reason: str,
                *, retry_after_s: float | None = None) -> NoReturn:
    """End the call with a rich status: google.rpc ErrorInfo(reason, domain) and, if retrying helps, RetryInfo."""
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    if retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(retry_after_s * 1e9))
        details.append(any_pb2.Any())
        details[-1].Pack(retry)
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises
