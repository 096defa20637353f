"""Load generation. Locust is imported only by `shapes.py` and `locustfile.py` (importing
locust monkey-patches the process through gevent); `stages.py`, `pacing.py` and `run.py`
are plain Python and safe to import anywhere."""
