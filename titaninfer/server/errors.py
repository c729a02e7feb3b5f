"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` for every failure.

`APIError` is what route code raises; `install_error_handlers` maps it, FastAPI's validation
errors (always 400 here, never 422), Starlette's HTTP errors (404, 405) and anything
unexpected (500, logged with its traceback) onto that one body shape.
Error bodies are ASCII-escaped JSON so an error can never fail to encode, whatever the
client sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
    429: "rate_limit_error", 503: "service_unavailable",
}


class APIError(Exception):
    """An error to return to the client as is."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, err_type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.err_type = err_type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               err_type: str | None = None) -> dict[str, Any]:
    kind = err_type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_bytes(status: int, message: str, **kw: Any) -> bytes:
    return json.dumps(error_body(status, message, **kw), ensure_ascii=True).encode("ascii")


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None,
                   **kw: Any) -> Response:
    return Response(error_bytes(status, message, **kw), status_code=status,
                    media_type="application/json", headers=headers)


def api_error_response(e: APIError) -> Response:
    return error_response(e.status, e.message, param=e.param, code=e.code, err_type=e.err_type,
                          headers=e.headers)


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """The first pydantic error as (message, param). The offending input is left out: it
    may be huge, or not even encodable."""
    if not errors:
        return "invalid request", None
    # A union field reports one error per member; the member that got furthest into the
    # value (the longest location) is the one the client meant.
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    # Union members show up as extra path parts (e.g. "str", "list[int]"); they only confuse.
    loc = [p for p in loc if not any(c in p for c in "[]")
           and p not in ("str", "int", "float", "bool", "function-after")]
    param = ".".join(loc) or None
    msg = str(err.get("msg", "invalid value"))
    if err.get("type") == "missing" and param:
        return f"'{param}' is required", param
    return (f"invalid '{param}': {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return api_error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = validation_message(list(exc.errors()))
        return error_response(400, message, param=param)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return error_response(500, "internal server error", err_type="server_error")

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
