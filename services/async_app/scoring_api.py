"""Async scoring handler (port 8001): features from Redis, then the model API twice (the
``model_calls`` setting), concurrently (``sequential_model_calls`` awaits them one after the
other instead). The same work as a job: submit to SAQ and poll (services/jobs.py,
services/async_app/job_queue.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services import admission, features, jobs
from services.async_app.admission import AsgiAdmission
from services.async_app.base import VALUES_BODY_DOC, new_app, request_values
from services.async_app.clients import feature_store, model_client
from services.async_app.job_queue import SaqJobs
from services.async_app.scoring import score
from services.describe import predict_path
from services.settings import Arch, Role, Settings

# The query parameter is read raw (a repeat is refused, see features.one_entity); this keeps
# /docs showing it.
ENTITY_DOC = {
    "parameters": [{"name": "entity", "in": "query", "required": False,
                    "schema": {"type": "string"}, "description": "whose stored features"}]
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    url = settings.model_base_url(Arch.ASYNC) + predict_path(Arch.ASYNC)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Once per worker, on the worker's own event loop.
        app.state.store = feature_store(settings)
        app.state.model = model_client(settings, url)
        app.state.jobs = SaqJobs(settings)
        await app.state.jobs.connect()
        yield
        if admission.enabled(settings):
            logging.getLogger("scoring_lab.admission").info(
                "admission counters: %s", admission.for_process(settings).stats_json().decode())
        await app.state.model.aclose()
        await app.state.store.aclose()
        await app.state.jobs.aclose()

    app = new_app(Role.SCORING, settings, lifespan)

    @app.post(predict_path(Arch.ASYNC), openapi_extra={**VALUES_BODY_DOC, **ENTITY_DOC})
    async def predict(request: Request) -> dict[str, float]:
        values = await request_values(request, settings, settings.max_values)
        entity = features.check_entity(
            features.one_entity(request.query_params.getlist("entity"), settings.default_entity)
        )
        return await score(settings, request.app.state.store, request.app.state.model,
                           values, entity)

    @app.post(jobs.jobs_path(Arch.ASYNC), status_code=202,
              openapi_extra={**VALUES_BODY_DOC, **ENTITY_DOC})
    async def submit_job(request: Request) -> JSONResponse:
        # The predict endpoint's input, refused with the same 4xx before anything is queued.
        values = await request_values(request, settings, settings.max_values)
        entity = features.check_entity(
            features.one_entity(request.query_params.getlist("entity"), settings.default_entity)
        )
        job_id = await request.app.state.jobs.submit(values, entity)
        return JSONResponse(jobs.pending(job_id), status_code=202,
                            headers={"Location": jobs.job_path(Arch.ASYNC, job_id)})

    # GET answers HEAD too, as Flask's routes do.
    @app.api_route(jobs.jobs_path(Arch.ASYNC) + "/{job_id}", methods=["GET", "HEAD"])
    async def job_status(job_id: str, request: Request) -> dict[str, object]:
        wait_s = jobs.wait_seconds(request.query_params.getlist("wait"), settings)
        return await request.app.state.jobs.status(job_id, wait_s)

    if admission.enabled(settings):  # off: not installed, the measured path stays as it was
        # Added last: the outermost middleware, before the body limit reads anything.
        app.add_middleware(AsgiAdmission, admission=admission.for_process(settings),
                           path=predict_path(Arch.ASYNC))
    return app
