"""Sync scoring handler (port 5001): features from Redis, then the model API twice (the
``model_calls`` setting), one call after the other, as a blocking handler must. The same work
as a job: submit to RQ and poll (services/jobs.py, services/sync_app/job_queue.py)."""

from __future__ import annotations

from flask import Flask, jsonify, request

from services import admission, features, jobs
from services.describe import predict_path
from services.settings import Arch, Role, Settings, SyncWorker
from services.sync_app.admission import WsgiAdmission
from services.sync_app.base import new_app, request_values
from services.sync_app.clients import FeatureStore, ModelClient
from services.sync_app.job_queue import RqJobs
from services.sync_app.scoring import score


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    wrap = None
    if admission.enabled(settings):  # off: not installed, the measured path stays as it was
        # gthread's bound is held by its worker class, before the thread queue (serve.py).
        gate = settings.sync_worker is not SyncWorker.GTHREAD
        gates = admission.for_process(settings)

        def wrap(wsgi_app):
            return WsgiAdmission(wsgi_app, gates, predict_path(Arch.SYNC), gate)

    app = new_app(Role.SCORING, settings, wrap)
    # Once per worker: the app factory runs in each gunicorn worker after the fork.
    store = FeatureStore(settings)
    model = ModelClient(settings, settings.model_base_url(Arch.SYNC) + predict_path(Arch.SYNC))
    app.extensions["scoring_lab.clients"] = (store, model)
    queue = RqJobs(settings)
    app.extensions["scoring_lab.jobs"] = queue

    @app.post(predict_path(Arch.SYNC))
    def predict():
        values = request_values(settings, settings.max_values)
        entity = features.check_entity(
            features.one_entity(request.args.getlist("entity"), settings.default_entity)
        )
        return score(settings, store, model, values, entity)

    @app.post(jobs.jobs_path(Arch.SYNC))
    def submit_job():
        # The predict endpoint's input, refused with the same 4xx before anything is queued.
        values = request_values(settings, settings.max_values)
        entity = features.check_entity(
            features.one_entity(request.args.getlist("entity"), settings.default_entity)
        )
        job_id = queue.submit(values, entity)
        return jsonify(jobs.pending(job_id)), 202, {"Location": jobs.job_path(Arch.SYNC, job_id)}

    @app.get(jobs.jobs_path(Arch.SYNC) + "/<job_id>")
    def job_status(job_id: str):
        return jsonify(queue.status(job_id, jobs.wait_seconds(request.args.getlist("wait"),
                                                              settings)))

    return app
