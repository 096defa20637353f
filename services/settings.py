"""The one settings class of every lab service.

Both architectures read the same environment variables (prefix ``SCORING_LAB_``); the Ansible
templates only fill them in. A service never calls ``os.getenv`` itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import Field, HttpUrl, RedisDsn, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Role(StrEnum):
    MODEL = "model"
    SCORING = "scoring"
    # The job queue's workers (services/queue_workers.py): no port, they take jobs from Redis.
    QUEUE = "queue"


class Arch(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class SyncWorker(StrEnum):
    """gunicorn worker class of the sync stack (experiment 4 compares them)."""

    MEINHELD = "meinheld"  # the original's: event-driven accept loop, blocking handler
    SYNC = "sync"  # gunicorn's plain pre-fork worker: one request at a time
    GTHREAD = "gthread"  # gunicorn's threaded worker
    # gunicorn's gevent worker: monkey-patches the worker's blocking I/O (sockets, sleep) into
    # greenlets, so one worker serves up to `gevent_connections` requests at once.
    GEVENT = "gevent"


class Server(StrEnum):
    """The HTTP server a service runs on (issue 26: server, framework and concurrency model
    apart). The framework follows the architecture: Flask (WSGI) sync, FastAPI (ASGI) async."""

    DEFAULT = "default"  # gunicorn (SYNC_WORKER's class) for sync, uvicorn for async: the seed's
    # granian (Rust): Flask on its WSGI interface (blocking threads per worker, the knob
    # `granian_blocking_threads`), FastAPI on its ASGI interface.
    GRANIAN = "granian"
    GUNICORN_ASGI = "gunicorn-asgi"  # gunicorn's own ASGI worker (>= 24): async only


class UvicornHttp(StrEnum):
    """uvicorn's HTTP parser (async on the default server)."""

    HTTPTOOLS = "httptools"  # llhttp in C, with the lab's limits (services/async_app/protocol.py)
    H11 = "h11"  # pure Python


class UvicornLoop(StrEnum):
    """uvicorn's event loop (async on the default server)."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class HttpClient(StrEnum):
    """Async HTTP client library of the async scoring handler."""

    HTTPX = "httpx"
    AIOHTTP = "aiohttp"


class ModelBatching(StrEnum):
    """How the async model API groups predictions (services/async_app/batcher.py)."""

    OFF = "off"  # on demand: every request is a batch of one
    MICRO = "micro"  # the plain asyncio micro-batcher: max size, max wait


class RedisParser(StrEnum):
    """Code that reads the Redis protocol in both stacks' Redis clients (redis-py's own Python,
    or hiredis's C parser: services/redis_protocol.py)."""

    PYTHON = "python"
    HIREDIS = "hiredis"


class RqWorker(StrEnum):
    """The RQ worker class of the sync queue workers (services/sync_app/job_queue.py)."""

    SIMPLE = "simple"  # runs every job in the worker's own process: clients and pools kept
    FORK = "fork"  # RQ's default: forks a work horse per job (new connections per job)


# The original project's public ports: model sync/async 5000/8000, scoring sync/async 5001/8001.
DEFAULT_PORTS = {
    (Role.MODEL, Arch.SYNC): 5000,
    (Role.SCORING, Arch.SYNC): 5001,
    (Role.MODEL, Arch.ASYNC): 8000,
    (Role.SCORING, Arch.ASYNC): 8001,
}
# The BentoML model server's port when SCORING_LAB_PORT is unset (BentoML's own default). It
# answers both architectures' model paths, so a scoring handler of either targets it with
# SCORING_LAB_MODEL_URL=http://<host>:3000.
BENTOML_MODEL_PORT = 3000

Seconds = Annotated[float, Field(ge=0)]
ENV_PREFIX = "SCORING_LAB_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- process -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535, description="None: the role's public port")
    workers: int | None = Field(None, ge=1, le=1024, description="None: auto from CPU affinity")
    service: str = Field("", description="label for the resource sampler, e.g. scoring-sync")
    run_dir: str | None = Field(None, description="where this service may write (profiles)")
    # Experiment 1: accept per-request profile headers and write profiles under
    # <run_dir>/profiles/ (services/profiling.py). Off: nothing is installed.
    profiling: bool = False
    # Cap on the bytes under <run_dir>/profiles/ (every service of the run dir together): once
    # reached, requests are served unprofiled (status "capped", counted and logged), never
    # failed. A profile already running may finish past it (one per worker). 0 = no profiles.
    profiles_max_bytes: int = Field(256 * 1024 * 1024, ge=0)

    # --- dependencies --------------------------------------------------------------------
    redis_url: RedisDsn = RedisDsn("redis://127.0.0.1:6379/0")
    model_url: HttpUrl | None = Field(None, description="None: the same-arch model on this host")
    model_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    redis_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Per worker. Sized above the concurrency one worker sees, so requests never fail for want
    # of a connection; the async Redis pool blocks (waits) instead of raising when exhausted.
    # The sync pools grow to a gevent worker's `gevent_connections` (sync_app/clients.py).
    pool_size: int = Field(256, ge=1, le=10_000)

    # --- the fake model ------------------------------------------------------------------
    sleep_min_s: Seconds = 0.040
    sleep_max_s: Seconds = 0.050
    # CPU-bound work per prediction call: a batch of one (every on-demand request) burns
    # exactly this, as before the device model existed; each further item of a batch adds
    # `cpu_burn_per_item_s`.
    cpu_burn_s: Seconds = Field(0.0, description="CPU-bound work per prediction call")
    cpu_burn_per_item_s: Seconds = Field(0.0, description="CPU work per further batch item")
    # The device (services/device.py): `device_slots` exclusive slots shared by every worker of
    # one model API; a prediction of a batch of n holds one for its CPU work plus the sleep
    # (base) plus `device_per_item_ms` x (n - 1). 0 slots: no device, today's unbounded model
    # (the deployment default, so committed runs stay comparable; the device model is used
    # with 1 slot). A batch of one costs the same with or without the device.
    device_slots: int = Field(0, ge=0, le=1024)
    device_per_item_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.5
    # The async model API's batching; the sync one refuses `micro` (services/serve.py).
    model_batching: ModelBatching = ModelBatching.OFF
    model_batch_max_size: int = Field(32, ge=1, le=4096)
    # How long a batch's first request waits for others before the batch goes to the device.
    model_batch_max_wait_ms: Annotated[float, Field(ge=0, le=10_000)] = 5.0
    # The BentoML model server (services/bentoml_model/): the latency its adaptive batcher
    # must be able to keep for a request, else it answers 503 at once (BentoML's
    # max_latency_ms; it has no fixed max wait, it tunes its own). Its batches hold at most
    # `model_batch_max_size` items (BentoML needs >= 2).
    bentoml_max_latency_ms: int = Field(1000, ge=1, le=600_000)

    # --- the scoring handler's work (the crossover sweeps vary these) ----------------------
    # The original calls its model twice per request and answers the mean.
    model_calls: int = Field(2, ge=1, le=16, description="model API calls per scoring request")
    # CPU-bound work the handler itself does per request (feature engineering, say). In the
    # async handler it runs on the event loop, as such code in an `async def` would.
    handler_cpu_s: Seconds = Field(0.0, description="CPU-bound work per scoring request")

    # --- request limits ------------------------------------------------------------------
    default_entity: str = "0"
    max_values: int = Field(1024, ge=1, le=1_000_000)
    max_body_bytes: int = Field(64 * 1024, ge=64)
    # The async server's own limits (services/async_app/protocol.py); meinheld has its own.
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="request line + headers")
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        3.0, description="a whole request must arrive within this; 408 else (meinheld: ~3 s)"
    )
    keep_alive_s: int = Field(5, ge=1, description="idle connection closed after this")

    # --- variant switches (experiment 4); defaults are the lab's tuned build ---------------
    # Reproduce the original: a new HTTP client and Redis connection for every request.
    client_per_request: bool = False
    # Reproduce the original async handler: a blocking (sync) Redis call inside the event loop.
    blocking_redis: bool = False
    # Async handler awaits its two model calls one after the other instead of concurrently.
    sequential_model_calls: bool = False
    sync_worker: SyncWorker = SyncWorker.MEINHELD
    # meinheld's greenlet patching of socket I/O (off in the original images).
    meinheld_patch: bool = False
    gthread_threads: int = Field(4, ge=1, le=256)
    # gunicorn's `worker_connections` of the gevent worker: requests one worker serves at once.
    gevent_connections: int = Field(1000, ge=1, le=10_000)
    http_client: HttpClient = HttpClient.HTTPX
    # --- the server (issue 26); defaults are every committed run's servers ---------------
    server: Server = Server.DEFAULT
    uvicorn_http: UvicornHttp = UvicornHttp.HTTPTOOLS
    uvicorn_loop: UvicornLoop = UvicornLoop.UVLOOP
    # Threads per granian worker that run the WSGI app (granian's --blocking-threads): the
    # sync stack's concurrency on granian, as gthread's threads are on gunicorn.
    granian_blocking_threads: int = Field(32, ge=1, le=1024)
    redis_parser: RedisParser = RedisParser.PYTHON

    # --- admission control of the scoring handlers (services/admission.py; issue 25) -------
    # Off by default (0 / false): the handlers then run exactly the code they ran before.
    # Scoring requests one worker holds at once (gthread: running plus queued for a thread);
    # one more is answered 503 "overloaded" at once, with Retry-After. 0 = no limit.
    admission_limit: int = Field(0, ge=0, le=100_000)
    # The Retry-After (whole seconds, as HTTP has it) of admission control's 503s.
    admission_retry_after_s: int = Field(1, ge=0, le=3600)
    # Shed a scoring request whose deadline passed before its handler starts (503
    # "deadline_exceeded", before any Redis or model call). The deadline: the client's
    # X-Request-Deadline header (unix time, seconds), else arrival + admission_budget_s.
    admission_deadlines: bool = False
    # The budget of a request without the header, from its arrival as the server sees it
    # (services/admission.py says when that is per server). 0 = no deadline without a header.
    admission_budget_s: Seconds = 0.0
    # Adapt the limit (AIMD, services/admission.py) between 1 and admission_limit (its start):
    # +1/limit per answer within admission_target_s, x0.9 for a slower one or a 5xx.
    admission_adaptive: bool = False
    admission_target_s: Annotated[float, Field(gt=0)] = 0.5

    # --- fault injection (services/slowdown.py; experiment 9) ------------------------------
    # A file holding a factor the model's wait is multiplied by while it exists (the fault
    # "model API 3x slower", switched at run time without a restart). "" = off: the model API
    # never looks for it and runs the code every committed run measured.
    model_slowdown_file: str = ""

    # --- the job queue (services/jobs.py; issue 24): submit, job id, poll ---------------------
    # Jobs accepted and not yet started, per architecture's queue; a submit past it is
    # answered 503 "queue_full" with Retry-After, never accepted.
    queue_max_length: int = Field(1000, ge=1, le=1_000_000)
    queue_retry_after_s: int = Field(1, ge=0, le=3600)
    # How long a done or failed job's answer is kept; then its id answers 404.
    queue_result_ttl_s: int = Field(300, ge=1, le=7 * 24 * 3600)
    # A job running longer is stopped and failed. It is also what bounds the recovery of a job
    # whose worker died: after it (plus a sweep) the job is retried or failed, never lost.
    queue_job_timeout_s: int = Field(10, ge=1, le=3600)
    # Further attempts of a job whose worker died under it (or crashed in it); a job that
    # fails for a reason of its own (model down, unknown entity) is not retried.
    queue_retries: int = Field(1, ge=0, le=10)
    # How often each worker looks for jobs of dead workers (RQ's maintenance, SAQ's sweep), and
    # the length of a SAQ worker's blocking dequeue. Not 1 s: RQ's maintenance is a dozen Redis
    # calls, and the lab's SAQ sweep takes a job never marked active on its second look
    # (services/async_app/saq_sweep.py).
    queue_sweep_s: int = Field(5, ge=1, le=600)
    # Jobs one async (SAQ) worker process runs at once; an RQ worker runs one.
    queue_concurrency: int = Field(16, ge=1, le=10_000)
    # The longest a poll may wait for its job to end (``?wait=``, services/jobs.py). Below the
    # sync server's worker timeout (60 s), which a blocked meinheld worker does not notify.
    queue_max_wait_s: float = Field(10.0, gt=0, le=30)
    rq_worker: RqWorker = RqWorker.SIMPLE

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        if self.sleep_max_s < self.sleep_min_s:
            raise ValueError(
                f"sleep_max_s ({self.sleep_max_s}) must be >= sleep_min_s ({self.sleep_min_s})"
            )
        if self.profiling and not self.run_dir:
            raise ValueError("SCORING_LAB_PROFILING=true needs SCORING_LAB_RUN_DIR: profiles "
                             "are written only under <run_dir>/profiles/")
        if self.meinheld_patch and self.sync_worker is SyncWorker.GEVENT:
            raise ValueError("SCORING_LAB_MEINHELD_PATCH=true needs the meinheld worker: the "
                             "gevent worker does its own patching (SCORING_LAB_SYNC_WORKER)")
        if self.admission_adaptive and self.admission_limit == 0:
            raise ValueError("SCORING_LAB_ADMISSION_ADAPTIVE=true needs "
                             "SCORING_LAB_ADMISSION_LIMIT > 0: the limit it starts from and "
                             "never exceeds")
        if self.admission_budget_s > 0 and not self.admission_deadlines:
            raise ValueError("SCORING_LAB_ADMISSION_BUDGET_S needs "
                             "SCORING_LAB_ADMISSION_DEADLINES=true: only then are deadlines "
                             "read and requests shed")
        return self

    def port_for(self, role: Role, arch: Arch) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[(role, arch)]

    def model_base_url(self, arch: Arch) -> str:
        if self.model_url is not None:
            return str(self.model_url).rstrip("/")
        return f"http://127.0.0.1:{DEFAULT_PORTS[(Role.MODEL, arch)]}"


class SettingsError(ValueError):
    """SCORING_LAB_* values a service would refuse: one line per bad variable, naming it and
    the value it was given (the message ``python -m services`` prints before it exits)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("; ".join(lines))


def error_lines(exc: ValidationError) -> list[str]:
    """A Settings validation error as lines ``SCORING_LAB_<NAME>=<value>: <why>``; a check
    across several variables (the model validator) has no one name, so only its reason."""
    lines = []
    for error in exc.errors():
        msg = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(msg)
            continue
        name = ENV_PREFIX + "_".join(str(p) for p in error["loc"]).upper()
        lines.append(f"{name}={error.get('input')!r}: {msg}")
    return lines


class _GivenValues(Settings):
    """Settings from init values only: pydantic-settings' documented way to choose the sources
    (a plain ``Settings(**values)``, or ``model_validate``, still reads ``os.environ``)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings,)


def check_service_env(env: Mapping[str, Any], reserved: Collection[str] = ()) -> Settings:
    """An environment an experiment gives a service (a variant's, a build's): SCORING_LAB_*
    variables only, none of ``reserved`` (those the experiment sets itself), values the services
    accept. The settings it gives; SettingsError with one line per bad variable."""
    lines = [f"{key}: only SCORING_LAB_* variables (services/settings.py)"
             for key in env if not key.startswith(ENV_PREFIX)]
    lines += [f"{key}: the experiment sets it itself" for key in env if key in reserved]
    if lines:
        raise SettingsError(lines)
    return settings_from_env(env)


def settings_from_env(env: Mapping[str, Any]) -> Settings:
    """The settings a service started with ``env`` as its environment would have (the
    process's own environment plays no part): for analyses of a recorded variant's env.

    As the env source does: names matched without case, other variables ignored, values read
    as the strings an environment holds (None: unset). Every field is a scalar, which the env
    source hands to validation as that string, so validating the strings gives the same values
    and errors (tests/services/test_settings_from_env.py checks it against ``Settings()``).
    Raises SettingsError."""
    values = {}
    for key, value in env.items():
        if value is None or not key.upper().startswith(ENV_PREFIX):
            continue
        values[key[len(ENV_PREFIX):].lower()] = value if isinstance(value, str) else str(value)
    try:
        given = _GivenValues(**values)
    except ValidationError as exc:
        raise SettingsError(error_lines(exc)) from None
    # A plain Settings (equal to the one a service builds), from values already validated.
    return Settings.model_construct(given.model_fields_set, **dict(given))


def declared_defaults() -> Settings:
    """The settings a service started with no SCORING_LAB_* variable runs with: every field at
    its declared default. A controller (an experiment naming a factor's default) reads these,
    not ``Settings()``, which would take a stray variable from the controller's own shell."""
    return settings_from_env({})
