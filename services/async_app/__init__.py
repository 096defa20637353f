"""The asynchronous architecture: FastAPI apps served by uvicorn."""
