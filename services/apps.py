"""Where each service's app is built: one factory per role and architecture, an import string
every server takes (gunicorn, uvicorn, granian), each calling it once per worker, after the
fork, so an app's clients are its worker's own."""

from __future__ import annotations

from services.settings import Arch, Role

FACTORIES = {
    (Role.MODEL, Arch.SYNC): "services.sync_app.model_api:create_app",
    (Role.SCORING, Arch.SYNC): "services.sync_app.scoring_api:create_app",
    (Role.MODEL, Arch.ASYNC): "services.async_app.asgi:model_app",
    (Role.SCORING, Arch.ASYNC): "services.async_app.asgi:scoring_app",
}
