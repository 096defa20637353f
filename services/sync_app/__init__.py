"""The synchronous architecture: Flask apps served by gunicorn (meinheld worker by default)."""
