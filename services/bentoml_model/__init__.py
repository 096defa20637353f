"""The BentoML model server: the lab's fake model behind BentoML's own adaptive batcher (issue 23).

A third model API beside the sync and async ones, for experiment 7 to compare with the plain
micro-batcher (services/async_app/batcher.py). It runs in its own venv (.venv-bentoml, locked by
this folder's pyproject.toml and uv.lock: BentoML's dependencies stay out of the lab's lock) and
imports only the lab's dependency-light modules: settings, payload, errors, the device and the
fake model, so each fact about the model lives in one place. Start it with
``.venv-bentoml/bin/python -m services.bentoml_model`` (``__main__.py``).
"""

# The server's venv, relative to the repository (or a host's app directory): `make setup`, the
# devshell and the Ansible role make it there (the Makefile's BENTOML_VENV says it for make).
VENV = ".venv-bentoml"
