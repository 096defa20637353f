"""What both FastAPI apps share: the health check, ``GET /``, errors in the lab's shape, and
reading the request body through the shared validation (not pydantic), so both architectures
accept and refuse exactly the same bodies."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from services import errors, payload, profiling
from services.async_app.limits import BodyLimit
from services.describe import HEALTH_PATH, describe
from services.settings import Arch, Role, Settings

# The body is read raw (see module docstring); this keeps /docs showing what to send.
VALUES_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "example": [5.1, 3.5, 1.4, 0.2],
            }
        },
    }
}


def new_app(
    role: Role, settings: Settings, lifespan: AbstractAsyncContextManager | None = None
) -> FastAPI:
    # No slash redirects: Starlette builds their Location from the client's Host header, and
    # the sync stack answers 404 for a path with a trailing slash.
    app = FastAPI(
        title=f"scoring-lab {role} API (async)", lifespan=lifespan, redirect_slashes=False
    )
    app.state.settings = settings
    info = describe(role, Arch.ASYNC, settings, "fastapi")

    # GET routes answer HEAD too, as Flask's do (HTTP asks every server for GET and HEAD).
    @app.api_route("/", methods=["GET", "HEAD"])
    async def index() -> dict[str, object]:
        return info

    @app.api_route(HEALTH_PATH, methods=["GET", "HEAD"])
    async def healthcheck() -> dict[str, str]:
        return {"status": "OK"}

    @app.exception_handler(errors.ApiError)
    async def api_error(_: Request, exc: errors.ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=errors.headers(exc))

    @app.exception_handler(HTTPException)
    async def http_exception(_: Request, exc: HTTPException) -> JSONResponse:
        error = errors.http_error(exc.status_code, str(exc.detail))
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client left (or protocol.py answered 408/431 itself): nobody reads this.
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = errors.invalid_payload("; ".join(str(e.get("msg")) for e in exc.errors()))
        return JSONResponse(error.body(), status_code=error.status)

    if settings.profiling:  # off: nothing installed, the request path stays the measured one
        app.add_middleware(profiling.AsgiProfiling, role=role, settings=settings)
    # Outermost: counts the body as it streams in, whoever reads it.
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    return app


async def request_values(request: Request, settings: Settings, max_values: int) -> list[float]:
    """The request's body as validated values (raises ApiError)."""
    # Repeated Content-Type headers joined as the WSGI server joins them (see check_content_type).
    payload.check_content_type(", ".join(request.headers.getlist("content-type")) or None)
    declared = int(request.headers.get("content-length") or 0)  # uvicorn checked it is digits
    if declared > settings.max_body_bytes:
        raise errors.body_too_large(declared, settings.max_body_bytes)
    body = await request.body()
    return payload.parse_values(
        body, max_values=max_values, max_body_bytes=settings.max_body_bytes
    )
