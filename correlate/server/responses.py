"""Content types and error bodies shared by every route: `google.rpc.Status`, as protobuf or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping

from google.rpc import code_pb2, status_pb2
from starlette.responses import Response

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

#: HTTP status -> google.rpc.Code, for the Status body (OTLP clients read the message, not the code).
_RPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, lowercase and without parameters (`; charset=…`)."""
    return (header or "").split(";", 1)[0].strip().lower()


def error_response(
    status: int, message: str, content_type: str | None = None, *, headers: Mapping[str, str] | None = None
) -> Response:
    """An error answered with a `google.rpc.Status`: JSON when the request was JSON, else protobuf."""
    code = _RPC_CODES.get(status, code_pb2.UNKNOWN)
    if content_type == JSON:
        body = json.dumps({"code": code, "message": message})
        return Response(body, status_code=status, media_type=JSON, headers=dict(headers or {}))
    payload = status_pb2.Status(code=code, message=message).SerializeToString()
    return Response(payload, status_code=status, media_type=PROTOBUF, headers=dict(headers or {}))


__all__ = ["JSON", "PROTOBUF", "error_response", "media_type"]
