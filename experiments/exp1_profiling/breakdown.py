"""Where the wall time of a profile goes, computed from the profile itself.

A pyinstrument session (``.pyisession``: the sampled call stacks, each with the wall time it
stood for) is cut into categories by the modules on each stack:

- every sample is put in the category of the **deepest** frame on its stack that belongs to a
  *specific* category (HTTP calls, Redis, the model's prediction, serialization): a socket read
  under urllib3 is time spent on a model API call, a ``json.dumps`` under Flask is serialization;
- else, a stack goes to the deepest *general* frame (framework, event loop, application code,
  the profiler itself), else to "other", except:
- a sample with no specific frame and no Python frame at all, or whose innermost frame is the
  event loop or the server's accept loop, is the worker waiting for work ("event loop / idle").

yappi's function table (``.json``) has no stacks: it is summarised as the functions with the
most own time (``tsub``), each with its category, in the clock the profile was taken with.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.profiling import SESSION_SUFFIX

# Display order and labels of the categories.
CATEGORIES: dict[str, str] = {
    "http_calls": "HTTP calls (server: model API calls; client: the scoring call)",
    "redis": "Redis",
    "prediction": "model prediction (the fake model's sleep/CPU)",
    "serialization": "serialization (JSON, payload parsing)",
    "framework": "framework and server (routing, request/response objects, HTTP)",
    "application": "application code (services/)",
    "event_loop": "event loop / idle (waiting for work or I/O readiness)",
    "profiler": "profiler overhead",
    "other": "other (stdlib, imports)",
}
SPECIFIC = ("http_calls", "redis", "prediction", "serialization")
_MODULES: dict[str, str] = {
    **dict.fromkeys(("httpx", "httpcore", "h11", "h2", "requests", "urllib3", "aiohttp",
                     "http", "certifi", "idna", "charset_normalizer"), "http_calls"),
    **dict.fromkeys(("redis",), "redis"),
    **dict.fromkeys(("json", "orjson", "ujson", "services.payload"), "serialization"),
    **dict.fromkeys(("flask", "werkzeug", "jinja2", "itsdangerous", "click", "blinker",
                     "starlette", "fastapi", "pydantic", "pydantic_core", "anyio", "sniffio",
                     "gunicorn", "meinheld", "uvicorn", "httptools", "uvloop", "greenlet"),
                    "framework"),
    **dict.fromkeys(("asyncio", "selectors", "concurrent"), "event_loop"),
    **dict.fromkeys(("pyinstrument", "yappi", "services.profiling"), "profiler"),
    **dict.fromkeys(("services.fake_model",), "prediction"),
}
# Innermost frames that mean "this worker is waiting for work": the event loop itself, or the
# server's accept loop (gunicorn/meinheld run the loop in C below these frames).
_IDLE_MODULES = {"asyncio", "selectors", "uvloop", "gunicorn", "meinheld"}
_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/)(.*)$")
_SITE = re.compile(r"/(?:site|dist)-packages/(.*)$")


def module_of(path: str) -> str:
    """The top-level module of a file path ("services.<module>" for the lab's own code)."""
    for pattern in (_SITE, _STDLIB):
        m = pattern.search(path)
        if m:
            first = m.group(1).split("/")[0]
            return first.removesuffix(".py")
    parts = path.replace("\\", "/").split("/")
    if "services" in parts:
        rest = parts[len(parts) - parts[::-1].index("services"):]
        if rest:
            return ".".join(["services", *rest]).removesuffix(".py")
    return path


def category_of(module: str) -> str | None:
    if module in _MODULES:
        return _MODULES[module]
    if module.startswith("services."):
        return "application"
    return None


def _frames(stack: Iterable[str]) -> list[tuple[str, str]]:
    """(function, module) of the real frames of a pyinstrument stack, outermost first."""
    out = []
    for ident in stack:
        parts = ident.split("\x00")
        if len(parts) < 2 or parts[1] == "<thread>":
            continue  # synthetic frames ([await], [self]) and the thread root
        out.append((parts[0], "builtins" if parts[1] == "<built-in>" else module_of(parts[1])))
    return out


def classify_stack(stack: Iterable[str]) -> str:
    frames = _frames(stack)
    # The model APIs' prediction is a plain sleep called from their predict handler.
    if frames and frames[-1][0] == "sleep" and frames[-1][1] in ("builtins", "asyncio") and any(
            module.endswith(".model_api") for _, module in frames):
        return "prediction"
    cats = [category_of(module) for _, module in frames]
    for cat in reversed(cats):
        if cat in SPECIFIC:  # e.g. an await on an asyncio.Event inside httpcore: HTTP
            return cat
    if not frames or frames[-1][1] in _IDLE_MODULES:
        return "event_loop"
    for cat in reversed(cats):
        if cat is not None:
            return cat
    return "other"


def session_file(directory: Path, name: str) -> Path:
    """A profile's pyinstrument session: as the service wrote it, or gzipped, as a result
    folder stores it (a window under heavy load writes 9 MB of repeated frames)."""
    plain = directory / f"{name}{SESSION_SUFFIX}"
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def load_session(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def pyinstrument_breakdown(path: str | Path) -> dict[str, Any]:
    """{duration_s, samples, seconds: {category: s}, share: {category: fraction}} of one
    ``.pyisession`` file (shares of the sampled time, which is the profile's wall time)."""
    doc = load_session(path)
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for stack, t in doc["frame_records"]:
        seconds[classify_stack(stack)] += float(t)
    total = sum(seconds.values())
    return {"duration_s": float(doc.get("duration") or total), "sampled_s": total,
            "samples": len(doc["frame_records"]), "seconds": seconds,
            "share": {k: (v / total if total else 0.0) for k, v in seconds.items()}}


def combine(breakdowns: list[dict[str, Any]]) -> dict[str, Any]:
    """Several profiles of the same thing (repeats) as one: seconds per profile on average,
    shares of the summed time."""
    n = len(breakdowns)
    if not n:
        return {"profiles": 0, "seconds": {}, "share": {}, "sampled_s": 0.0}
    total = {k: sum(b["seconds"][k] for b in breakdowns) for k in CATEGORIES}
    all_s = sum(total.values())
    return {"profiles": n, "sampled_s": all_s / n,
            "seconds": {k: v / n for k, v in total.items()},
            "share": {k: (v / all_s if all_s else 0.0) for k, v in total.items()}}


def yappi_top(path: str | Path, n: int = 8) -> dict[str, Any]:
    """The n functions with the most own time (tsub) in a yappi ``.json`` export."""
    doc = json.loads(Path(path).read_text())
    rows = sorted(doc["functions"], key=lambda r: r["tsub"], reverse=True)
    total = sum(r["tsub"] for r in doc["functions"])
    top = [{"function": f"{module_of(r['module'])}:{r['name']}", "ncall": r["ncall"],
            "tsub_s": r["tsub"], "ttot_s": r["ttot"],
            "category": category_of(module_of(r["module"])) or "other"} for r in rows[:n]]
    return {"clock": doc.get("clock"), "total_tsub_s": total, "top": top}


# --------------------------------------------------------- CPU per request (window profiles)
# Where a service's CPU goes per request under load (issue 14, "where the async CPU goes"): the
# wall-time categories above, with the framework and event-loop ones split into the
# application framework and the server driving it, and the waits taken out.
CPU_CATEGORIES: dict[str, str] = {
    "http_client": "HTTP client (httpx, aiohttp; requests, urllib3)",
    "redis": "Redis client",
    "framework": "framework / validation (FastAPI, Starlette, pydantic; Flask, werkzeug)",
    "server": "server / event loop work (uvicorn, httptools, asyncio; gunicorn, meinheld)",
    "serialization": "JSON (and the lab's payload parsing)",
    "prediction": "model prediction (the fake model's CPU burn)",
    "application": "application code (services/)",
    "profiler": "profiler",
    "other": "other (stdlib, builtins)",
}
_SERVER_MODULES = {"uvicorn", "httptools", "uvloop", "gunicorn", "meinheld", "greenlet",
                   "asyncio", "selectors", "concurrent"}
# A sample whose innermost frame is one of these waits for I/O or work: not CPU. The loops'
# blocking calls (pyinstrument records C calls as "<built-in>" frames), selectors' wrapper
# around them, and the servers whose wait loop is C code below their last Python frame.
_WAIT_CALLS = {"epoll.poll", "poll.poll", "devpoll.poll", "kqueue.control", "select"}
_WAIT_MODULES = {"selectors", "uvloop", "gunicorn", "meinheld"}
IDLE = "idle"
# The categories of busy samples stand for the measured CPU only when the two roughly agree
# (scale = measured CPU / busy sampled wall time within these bounds). pyinstrument takes a
# sample at the first Python event after its interval, so a burst of work shorter than the
# interval (1 ms) after a wait is charged to the next wait: a service that does little per
# request (the model API) shows a scale far above 1. A blocking worker's socket reads are
# waits the samples call busy: scale far below 1. Outside the bounds only the total is shown.
SCALE_TRUSTED = (2 / 3, 1.5)


def _waiting(frames: list[tuple[str, str]]) -> bool:
    if not frames:
        return True
    function, module = frames[-1]
    return module in _WAIT_MODULES or (module == "builtins" and function in _WAIT_CALLS)


def cpu_category(stack: Iterable[str]) -> str:
    """The CPU category of a sample (a key of CPU_CATEGORIES), or IDLE for a wait. Unlike
    ``classify_stack``, asyncio's own work (scheduling, callbacks, transport writes) is the
    server's CPU, and only the wait itself is idle."""
    frames = _frames(stack)
    base = classify_stack(stack)
    if base == "prediction":  # the fake model's sleep is a wait; its CPU burn is work
        return IDLE if frames[-1][0] == "sleep" else "prediction"
    if base == "http_calls":
        return "http_client"
    if base not in ("framework", "event_loop"):
        return base
    if _waiting(frames):
        return IDLE
    for _, module in reversed(frames):
        if category_of(module) in ("framework", "event_loop"):
            return "server" if module in _SERVER_MODULES else "framework"
    return "server"


def cpu_breakdown(path: str | Path) -> dict[str, Any]:
    """Of one ``.pyisession``: the process's CPU over the session (pyinstrument's
    ``cpu_time``; None if absent), the sampled wall time per CPU category, and the idle time."""
    doc = load_session(path)
    wall = dict.fromkeys(CPU_CATEGORIES, 0.0)
    idle = 0.0
    for stack, t in doc["frame_records"]:
        category = cpu_category(stack)
        if category == IDLE:
            idle += float(t)
        else:
            wall[category] += float(t)
    cpu = doc.get("cpu_time")
    return {"cpu_s": None if cpu is None else float(cpu), "busy_wall_s": sum(wall.values()),
            "idle_wall_s": idle, "wall_s": wall}


def cpu_per_request(parts: list[dict[str, Any]], requests: int) -> dict[str, Any] | None:
    """ms of CPU per request per category over several workers' ``cpu_breakdown``s of one
    window (``requests``: what those workers served in it); None without requests.

    The samples carry wall time only, so a category's CPU is its busy (non-idle) sampled wall
    time x ``scale``: the measured CPU over the busy wall time (method "cpu_time"). On a core
    shared with other services a busy sample's wall time includes waiting for the CPU, which
    the scale takes out; the profiler's own CPU is in the measurement and is spread over the
    categories. Without a measured CPU time, busy wall time counts as CPU (method
    "busy_wall": right only on an uncontended core)."""
    if requests <= 0 or not parts:
        return None
    busy = sum(p["busy_wall_s"] for p in parts)
    cpus = [p["cpu_s"] for p in parts]
    measured = all(c is not None for c in cpus)
    cpu = sum(cpus) if measured else busy
    scale = cpu / busy if busy > 0 else 0.0
    wall = {k: sum(p["wall_s"][k] for p in parts) for k in CPU_CATEGORIES}
    ms = {k: v * scale / requests * 1000 for k, v in wall.items()}
    return {"method": "cpu_time" if measured else "busy_wall", "requests": requests,
            "cpu_s": cpu, "busy_wall_s": busy,
            "idle_wall_s": sum(p["idle_wall_s"] for p in parts), "scale": scale,
            "ms_per_request": ms, "total_ms": cpu / requests * 1000,
            "split_trusted": measured and SCALE_TRUSTED[0] <= scale <= SCALE_TRUSTED[1],
            # CPU measured while no busy sample was taken cannot be put in a category.
            "unattributed_ms": (cpu / requests * 1000) if busy <= 0 else 0.0}
