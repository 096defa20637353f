"""What both Flask apps share: the health check, ``GET /``, and errors in the lab's shape."""

from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from services import errors, payload, profiling
from services.describe import HEALTH_PATH, describe
from services.settings import Arch, Role, Settings
from services.sync_app.request_line import RequestLineChecks


def new_app(role: Role, settings: Settings, wrap=None) -> Flask:
    """``wrap``: WSGI middleware put inside the request-line checks (admission control)."""
    app = Flask(f"scoring_lab.{role}.sync")
    app.extensions["scoring_lab.settings"] = settings
    # The interface is GET (and so HEAD) and POST, the same in both architectures: no
    # automatic OPTIONS answer (405, as FastAPI), and a path matches only as written
    # (`//api/...` is 404, not merged into `/api/...`), so no redirect is ever built.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    info = describe(role, Arch.SYNC, settings, "flask")

    @app.get("/")
    def index():
        return jsonify(info)

    @app.get(HEALTH_PATH)
    def healthcheck():
        return jsonify(status="OK")

    @app.errorhandler(errors.ApiError)
    def api_error(exc: errors.ApiError):
        return jsonify(exc.body()), exc.status, errors.headers(exc)

    @app.errorhandler(HTTPException)
    def http_exception(exc: HTTPException):
        error = errors.http_error(exc.code or 500, exc.description)
        return jsonify(error.body()), error.status

    if wrap is not None:
        app.wsgi_app = wrap(app.wsgi_app)
    app.wsgi_app = RequestLineChecks(app.wsgi_app)
    if settings.profiling:  # off: nothing installed, the request path stays the measured one
        app.wsgi_app = profiling.WsgiProfiling(app.wsgi_app, role, settings)
    return app


def request_values(settings: Settings, max_values: int) -> list[float]:
    """The current request's body as validated values (raises ApiError)."""
    payload.check_content_type(request.content_type)
    if (request.content_length or 0) > settings.max_body_bytes:
        raise errors.body_too_large(request.content_length, settings.max_body_bytes)
    # One byte past the limit is enough to refuse a body without a Content-Length (chunked).
    body = request.stream.read(settings.max_body_bytes + 1)
    return payload.parse_values(
        body, max_values=max_values, max_body_bytes=settings.max_body_bytes
    )
