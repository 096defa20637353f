"""Import strings for uvicorn's worker processes: each worker builds its app from the
environment (``Settings()``), so one setting means the same in every worker."""

from fastapi import FastAPI

from services.async_app import model_api, scoring_api


def model_app() -> FastAPI:
    return model_api.create_app()


def scoring_app() -> FastAPI:
    return scoring_api.create_app()
