"""Run generated cases against the real servers of both architectures and judge the answers.

Every case is sent to the sync and the async service of one role (model or scoring); it
fails when either answer is a 5xx (no fault is injected here), has a body outside the
documented ones, the two statuses differ, nothing comes back in time (a hang) or a worker
died. ``Stacks`` starts what the deployment runs: real Redis, gunicorn+meinheld, uvicorn.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from services import admission
from services.settings import settings_from_env
from services.sync_app.meinheld_limits import HTML_PAGE_STATUSES
from tests.conftest import free_port, start_queue_workers, start_redis, start_service, stop
from tests.fuzz.client import Reply, exchange
from tests.fuzz.generator import Case, case

ROLES = ("scoring", "model")
# The scoring services' job endpoints (services/jobs.py): cases of their own, sent to the
# scoring services, which then need their queue workers (stacks(queue_workers=True)).
JOB_ROLE = "jobs"
SERVED_BY = {JOB_ROLE: "scoring"}
# Differences the servers' own parsers make before any app code runs, listed in docs/services.md
# ("Errors and limits"): kind -> the statuses each architecture answers.
EXPECTED_DIFFERENCES = {"lf_only": {"sync": "200", "async": "400"},
                        "version_other": {"sync": "200", "async": "400"},
                        "truncated_oversize": {"sync": "408", "async": "413"},
                        "empty_lines": {"sync": "400", "async": "408"}}
ARCHS = ("sync", "async")
# The same with uvicorn's h11 parser (services/async_app/h11_protocol.py): it takes bare-LF
# line ends as meinheld does, and refuses an empty line before the request at once (400) as
# meinheld does, where httptools waits for a request (408).
H11_DIFFERENCES = {kind: statuses for kind, statuses in EXPECTED_DIFFERENCES.items()
                   if kind not in ("lf_only", "empty_lines")}


def h11_refuses(made: Case) -> bool:
    """h11 refuses (400) an HTTP/1.1 request with more than one Host header, which meinheld
    and httptools serve; the generator's requests carry one Host, a "headers" case may add
    another."""
    return made.raw is None and any(name.lower() == "host" for name, _ in made.headers)

# meinheld defects the lab cannot contain (docs/services.md, "Known limits of meinheld"): the sync
# outcome of these kinds is the documented one and is checked to stay so; the async answer is
# judged on its own. Trailers kill the worker that parses them (SIGSEGV): they are sent last,
# and the deaths they cause are counted apart from any other.
SYNC_UNCONTAINED = {"meinheld_chunked_trailers": "closed", "meinheld_huge_header": "closed"}
WORKER_KILLING = frozenset({"meinheld_chunked_trailers"})
# meinheld answers a request it refuses from its head (a bad query, say) with its 400 before
# reading the body, then closes: with more than a socket buffer of body still in flight the
# client's kernel gets a reset and may drop that 400 (2 of 10,000 scoring cases, docs/services.md).
EARLY_CLOSE_BYTES = 64 * 1024
# Admission control's refusals (services/admission.py): 503s with Retry-After, documented
# answers of a scoring service started with admission control on, and no other.
ADMISSION_CODES = frozenset({"overloaded", "deadline_exceeded"})
# granian's own answers (SCORING_LAB_SERVER=granian), made by its HTTP parser (hyper) before any
# app code runs, so without the lab's JSON error body: an empty body and `connection: close`.
# 400: a malformed head (garbage, bad version, bad header, bad chunk); 431: a head past
# max_header_bytes (README, "Servers: granian"). The app's own 4xx keep the lab's JSON shape.
GRANIAN_PAGES = frozenset({400, 431})
# granian bounds the time of a request's head (request_timeout_s), not of its body: a body
# shorter than its Content-Length holds a sync request's blocking thread until the client gives
# up (README, "Servers: granian"). That outcome is documented, and only it; the async apps
# bound the body themselves on granian (services/async_app/body_deadline.py: 408).
GRANIAN_SYNC_UNCONTAINED = {"lie_long": "hang"}


@dataclass
class Stacks:
    """Ports and processes of the four services (and their Redis)."""

    ports: dict[tuple[str, str], int]
    processes: dict[tuple[str, str], object]
    redis: object
    # Started with admission control on: its 503s are expected answers (admission_refusal).
    admission: bool = False
    # kind -> the statuses each architecture answers where their parsers differ.
    differences: dict[str, dict[str, str]] = field(
        default_factory=lambda: dict(EXPECTED_DIFFERENCES))
    # Case -> True where the async parser refuses (400) what meinheld serves (h11_refuses).
    async_refuses: object = None
    # SCORING_LAB_SERVER of every service (judge: which parsers' answers are documented).
    server: str = "default"

    def workers(self) -> dict[tuple[str, str], set[int]]:
        # A server's workers are its master's own children. Not their children: a worker may
        # run a short-lived process of its own at startup, whose exit is no worker's death
        # (the proof of 2026-12-07 counted one as a dead async worker on h11, while the
        # service log showed both workers serving until teardown).
        return {key: {child.pid for child in psutil.Process(p.pid).children()}
                for key, p in self.processes.items()}


@contextmanager
def stacks(workdir: Path | None = None, env: dict[str, str] | None = None,
           model_env: dict[str, dict[str, str]] | None = None,
           queue_workers: bool = False,
           arch_env: dict[str, dict[str, str]] | None = None,
           differences: dict[str, dict[str, str]] | None = None,
           async_refuses=None) -> Iterator[Stacks]:
    """Redis (seeded) and the four services, as deployed, each with 2 workers; short model
    sleeps so that cases run fast (the sleep is not what is fuzzed). ``model_env``: more
    variables for the model API of an architecture (a device, the async micro-batcher).
    ``queue_workers``: each architecture's job queue workers too (one process each).
    ``arch_env``: more variables for every service of an architecture (another server for the
    async ones, say); ``differences``: the documented sync/async differences of that build
    when they are not EXPECTED_DIFFERENCES (another parser refuses other inputs), and
    ``async_refuses``: which cases the async parser refuses (400) where meinheld serves them."""
    with tempfile.TemporaryDirectory(prefix="scoring-lab-fuzz-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        redis = start_redis(Path(tmp))
        processes: dict = {}
        ports = {(role, arch): free_port() for role in ROLES for arch in ARCHS}
        try:
            import redis as redis_py

            from services import features  # the seeder the deployment uses

            features.seed(redis_py.Redis.from_url(redis.url), 50)
            base = {"SCORING_LAB_WORKERS": "2", "SCORING_LAB_SLEEP_MIN_S": "0.002",
                    "SCORING_LAB_SLEEP_MAX_S": "0.004", "SCORING_LAB_REDIS_URL": redis.url,
                    **(env or {})}
            if queue_workers:
                # The fuzz judges answers, not the bound (tests/services/test_job_queue.py does):
                # a long run must not fill one queue and not the other.
                base.setdefault("SCORING_LAB_QUEUE_MAX_LENGTH", "1000000")
            for arch in ARCHS:
                served = {**base, **(arch_env or {}).get(arch, {})}
                processes[("model", arch)] = start_service(
                    "model", arch, ports[("model", arch)],
                    {**served, **(model_env or {}).get(arch, {})}, work / f"model-{arch}.log")
                processes[("scoring", arch)] = start_service(
                    "scoring", arch, ports[("scoring", arch)],
                    {**served,
                     "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{ports[('model', arch)]}"},
                    work / f"scoring-{arch}.log")
                if queue_workers:
                    processes[("queue", arch)] = start_queue_workers(
                        arch, {**base, "SCORING_LAB_MODEL_URL":
                               f"http://127.0.0.1:{ports[('model', arch)]}"},
                        work / f"queue-{arch}.log")
            settings = settings_from_env(base)
            yield Stacks(ports, processes, redis, admission.enabled(settings),
                         EXPECTED_DIFFERENCES if differences is None else differences,
                         async_refuses, settings.server.value)
        finally:
            for process in processes.values():
                stop(process)
            stop(redis.process)


# ------------------------------------------------------------------------------------ oracle

ERROR_KEYS = {"error", "message", "status"}
JOB_ID = re.compile(r"[0-9a-f]{32}")


def _finite(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _prediction(data: dict) -> bool:
    """A documented prediction: the scoring handler's ``{"detail"}``, or the model API's
    ``{"detail", "input_mean", "batch_size"}`` (README, Endpoints)."""
    if set(data) == {"detail"}:
        return isinstance(data["detail"], float) and math.isfinite(data["detail"])
    return (set(data) == {"detail", "input_mean", "batch_size"}
            and isinstance(data["detail"], float) and _finite(data["detail"])
            and _finite(data["input_mean"])
            and type(data["batch_size"]) is int and data["batch_size"] >= 1)


def _job_answer(data: dict, reply: Reply) -> bool:
    """A documented answer of the job endpoints (services/jobs.py): a submit's 202 (with the
    Location of its id), or a poll's pending, done (a prediction) or failed (a lab error)."""
    if not isinstance(data.get("id"), str) or not JOB_ID.fullmatch(data["id"]):
        return False
    if reply.status == 202:
        return (data == {"id": data["id"], "status": "pending"}
                and (reply.header("location") or "").endswith(f"/jobs/{data['id']}"))
    extra = {"pending": set(), "done": {"result"}, "failed": {"error"}}.get(data.get("status"))
    if extra is None or set(data) != {"id", "status"} | extra:
        return False
    if "result" in data:
        return isinstance(data["result"], dict) and _prediction(data["result"])
    return "error" not in data or (isinstance(data["error"], dict)
                                   and set(data["error"]) == ERROR_KEYS)


def body_problem(made: Case, reply: Reply, arch: str = "async",
                 server: str = "default") -> str | None:
    """Why ``reply`` is not one of the documented answers (None: it is)."""
    if reply.status is None:
        return None  # judged by outcome, not body
    if reply.status >= 500:
        return f"5xx ({reply.status}): {reply.body[:160]!r}"
    method = made.method if made.raw is None else ""
    if method == "HEAD":
        return "HEAD answered with a body" if reply.body else None
    try:
        data = json.loads(reply.body)
    except ValueError:
        html = reply.body.lstrip()[:1] == b"<"
        if html and arch == "sync" and server != "granian" and reply.status in HTML_PAGE_STATUSES:
            return None  # meinheld's own page, documented: it answers before the app
        if server == "granian" and not reply.body and reply.status in GRANIAN_PAGES:
            return None  # granian's own bodiless answer, before the app (GRANIAN_PAGES)
        kind = "html" if html else "non-JSON"
        return f"{kind} body for {reply.status}: {reply.body[:60]!r}"
    if 200 <= reply.status < 300:
        if isinstance(data, dict) and (
            data == {"status": "OK"} or "service" in data or _prediction(data)
            or _job_answer(data, reply)):
            return None
        return f"undocumented 2xx body {reply.body[:60]!r}"
    if not (isinstance(data, dict) and set(data) == ERROR_KEYS
            and data["status"] == reply.status):
        return f"error body outside the lab's shape: {reply.body[:80]!r}"
    return None


def admission_refusal(reply: Reply) -> bool:
    """A 503 of admission control: one of its error codes, with Retry-After."""
    if reply.status != 503 or reply.header("retry-after") is None:
        return False
    try:
        data = json.loads(reply.body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("error") in ADMISSION_CODES


def label(reply: Reply, admission_on: bool = False) -> str:
    if admission_on and admission_refusal(reply):
        return "503 admission"  # apart from the 5xx (Result.five_xx counts digits only)
    return str(reply.status) if reply.status is not None else reply.outcome


@dataclass
class Result:
    role: str
    histogram: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_kind: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[dict] = field(default_factory=list)
    failures_by_kind: Counter = field(default_factory=Counter)
    failures_by_cause: Counter = field(default_factory=Counter)
    # workers gone before the worker-killing kinds were sent (a failure) and during them
    died: dict = field(default_factory=dict)
    killed_by_documented: dict = field(default_factory=dict)

    def five_xx(self, arch: str) -> int:
        return sum(n for status, n in self.histogram[arch].items()
                   if status.isdigit() and int(status) >= 500)


def judge(made: Case, replies: dict[str, Reply], admission_on: bool = False,
          differences: dict[str, dict[str, str]] = EXPECTED_DIFFERENCES,
          async_refuses=None, server: str = "default") -> list[str]:
    """``admission_on``: the scoring services run admission control, so a refusal of it is a
    documented answer; the other architecture's answer to that case is then judged alone (the
    two differ by how loaded each was, not by what they accept)."""
    problems = []
    if admission_on and (refused := [a for a, r in replies.items() if admission_refusal(r)]):
        replies = {arch: reply for arch, reply in replies.items() if arch not in refused}
        return [f"{arch}: {problem}" for arch, reply in replies.items()
                if (problem := body_problem(made, reply, arch, server)) is not None]
    statuses = {arch: label(reply) for arch, reply in replies.items()}
    # On granian both architectures sit behind the same parser: meinheld's defects and the
    # parsers' documented differences are not theirs, so every case must answer alike, but
    # for the one granian leaves uncontained in the sync stack.
    meinheld = server != "granian"  # gunicorn-asgi is async only: sync stays on meinheld
    documented = (SYNC_UNCONTAINED if meinheld else GRANIAN_SYNC_UNCONTAINED).get(made.kind)
    if (meinheld and statuses["sync"] == "closed" and statuses["async"] == "400"
            and len(made.message("sync")) > EARLY_CLOSE_BYTES):
        documented = "closed"  # meinheld's early 400 lost to the reset (documented)
    if documented is not None:
        if statuses["sync"] != documented:
            server_name = "meinheld" if meinheld else "granian"
            problems.append(f"sync: answered {statuses['sync']}, not the documented "
                            f"{documented} of an uncontained {server_name} defect "
                            "(docs/services.md, README)")
        replies = {"async": replies["async"]}
    for arch, reply in replies.items():
        if reply.status is None and reply.outcome != "closed":
            problems.append(f"{arch}: {reply.outcome} after {reply.elapsed_s:.1f} s")
        if reply.status is None and reply.outcome == "closed" and not made.incomplete:
            problems.append(f"{arch}: connection closed without an answer")
        if (problem := body_problem(made, reply, arch, server)) is not None:
            problems.append(f"{arch}: {problem}")
    if documented is not None:
        return problems
    if async_refuses is not None and async_refuses(made) and statuses["async"] == "400":
        return problems  # the parser's documented refusal, each answer judged above
    if meinheld and made.kind in differences:
        if statuses != differences[made.kind]:
            problems.append(f"documented difference not as documented: {statuses}")
    elif len(set(statuses.values())) > 1:
        problems.append(f"sync/async differ: {statuses}")
    return problems


def cause(problem: str) -> str:
    """A failure's class, for the report: meinheld's own HTML pages are named apart."""
    if "html body" in problem:
        return "meinheld HTML error page"
    for marker in ("5xx", "differ", "hang", "closed without", "outside the lab's shape",
                   "undocumented", "documented difference", "HEAD", "non-JSON", "refused",
                   "garbled"):
        if marker in problem:
            return marker
    return problem[:40]


def send(port: int, arch: str, made: Case) -> Reply:
    return exchange(port, [made.message(arch)], made.method if made.raw is None else "")


def answer_all(stack: Stacks, role: str, cases: list[Case],
               concurrency: int = 16) -> list[tuple[Case, dict[str, Reply]]]:
    """Each case sent to the sync and the async service of ``role``, ``concurrency`` at once."""
    def one(made: Case) -> tuple[Case, dict[str, Reply]]:
        served_by = SERVED_BY.get(role, role)
        return made, {arch: send(stack.ports[(served_by, arch)], arch, made) for arch in ARCHS}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, cases))


def run_role(stack: Stacks, role: str, seed: int, cases: int, concurrency: int = 16,
             first: int = 0, kinds=None) -> Result:
    """Cases ``first``.. of ``role`` (only those whose kind ``kinds`` accepts, if given): every
    kind but the meinheld_* ones, then those, then the worker-killing ones, so that no other
    answer is collateral damage of a documented defect; a worker that dies before the last
    phase is a failure (``Result.died``)."""
    result = Result(role)
    made = [c for i in range(first, first + cases)
            if (c := case(seed, i, role)) and (kinds is None or kinds(c.kind))]
    before = stack.workers()
    phases = ([c for c in made if not c.kind.startswith("meinheld_")],
              [c for c in made if c.kind.startswith("meinheld_") and c.kind not in WORKER_KILLING],
              [c for c in made if c.kind in WORKER_KILLING])
    for n, phase in enumerate(phases):
        if n == len(phases) - 1:
            now = stack.workers()
            result.died = {k: before[k] - now[k] for k in before}
            before = now
        collect(result, answer_all(stack, role, phase, concurrency), stack.admission,
                stack.differences, stack.async_refuses, stack.server)
    now = stack.workers()
    result.killed_by_documented = {k: before[k] - now[k] for k in before}
    return result


def collect(result: Result, answered: list[tuple[Case, dict[str, Reply]]],
            admission_on: bool = False,
            differences: dict[str, dict[str, str]] = EXPECTED_DIFFERENCES,
            async_refuses=None, server: str = "default") -> None:
    for made, replies in answered:
        for arch, reply in replies.items():
            result.histogram[arch][label(reply, admission_on)] += 1
        result.by_kind[made.kind][" / ".join(label(r, admission_on)
                                             for r in replies.values())] += 1
        if problems := judge(made, replies, admission_on, differences, async_refuses,
                             server):
            result.failures_by_kind[made.kind] += 1
            for problem in problems:
                result.failures_by_cause[f"{made.kind}: {cause(problem)}"] += 1
            result.failures.append({"case": made.index, "kind": made.kind,
                                    "problems": problems,
                                    "request": made.message("sync")[:300].decode("latin-1")})


def report(results: list[Result]) -> str:
    lines = []
    for result in results:
        for arch in ARCHS:
            hist = result.histogram[arch]
            total = sum(hist.values())
            ordered = ", ".join(f"{k}: {v}" for k, v in sorted(hist.items()))
            lines.append(f"{result.role}-{arch}: {total} cases, 5xx {result.five_xx(arch)}; "
                         f"{ordered}")
        lines.append(f"{result.role}: {len(result.failures)} failing cases")
        lines += [f"  {n:6d}  {what}" for what, n in sorted(result.failures_by_cause.items())]
        for key, pids in result.died.items():
            if pids:
                lines.append(f"{'-'.join(key)}: workers gone (a failure): {sorted(pids)}")
        for key, pids in result.killed_by_documented.items():
            if pids:
                lines.append(f"{'-'.join(key)}: {len(pids)} worker(s) killed by the documented "
                             "chunked-trailer SIGSEGV (replaced by the master)")
    return "\n".join(lines)
