"""Probe: does a stack recover by itself after a step far past its capacity, and how fast?
(issue 12: in the 2026-12-01 experiment 3 run the async stack failed every capacity step after
one at 320 req/s, down to 56.6 req/s.)

On the deployed lab (experiments/lab/topology.py: loopback or the test hosts only), it sends
open-model load to one architecture's scoring endpoint at RATE req/s for SECONDS (constant
arrivals, each request with the lab's 10 s client timeout and at most 512 in flight, as the
capacity steps do), then stops all load and probes the endpoint one request at a time, a group
of 3 about every second (experiments/lab/recovery.py's probe), for WATCH seconds, printing the
probe latency over time and when it is back within 1.5x of the latency probed before the load.

    python -m experiments.tools.overload_probe --arch async --rate 320 --seconds 15 --watch 90

Measured on the 2-core dev VM (2026-12-01, default single-host deploy, services on core 0, the
probe on core 1):
- async (httpx) before the fix: 4800 sent, 504 ok; afterwards every probe answered 504
  model_timeout after 2 s for the whole 90 s watch, while the model API answered directly: the
  scoring handler's httpx pool had leaked every slot to cancelled calls (encode/httpcore#1093;
  services/async_app/clients.py). Only a restart recovered it.
- async after the fix: 4800 sent, 306 ok, 4494 HTTP 504 (overload fails fast at the 2 s model
  timeout); back within 1.5x idle 1.7 s after the last answer.
- sync at 40 req/s (about 4x its capacity): 600 sent, 478 ok, 122 connection errors; back
  0.3 s after the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from experiments.lab import topology as topology_mod
from experiments.lab.recovery import Probe, probe_group
from experiments.lab.verify import PAYLOAD
from services.describe import predict_path

TIMEOUT_S = 10.0
INFLIGHT_CAP = 512


async def _blast(url: str, rate: float, seconds: float) -> dict:
    """Constant arrivals at `rate` for `seconds`; counts of what came back."""
    outcome = {"sent": 0, "ok": 0, "timeout": 0, "error": 0, "cap_hits": 0, "latency_ms": []}
    causes: dict[str, int] = {}
    gate = asyncio.Semaphore(INFLIGHT_CAP)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=INFLIGHT_CAP)

    async def one(session: aiohttp.ClientSession) -> None:
        start = time.perf_counter()
        try:
            async with session.post(url, data=PAYLOAD,
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
                outcome["ok" if r.status == 200 else "error"] += 1
                if r.status != 200:
                    causes[f"HTTP {r.status}"] = causes.get(f"HTTP {r.status}", 0) + 1
        except TimeoutError:
            outcome["timeout"] += 1
        except aiohttp.ClientError as error:
            outcome["error"] += 1
            causes[type(error).__name__] = causes.get(type(error).__name__, 0) + 1
        finally:
            outcome["latency_ms"].append((time.perf_counter() - start) * 1000)
            gate.release()

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = []
        t0 = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if gate.locked():
                outcome["cap_hits"] += 1
            await gate.acquire()
            outcome["sent"] += 1
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    lat = sorted(outcome.pop("latency_ms"))
    outcome["p50_ms"] = round(statistics.median(lat), 1) if lat else None
    outcome["blast_s"] = round(time.perf_counter() - t0, 1)
    outcome["errors_by_cause"] = causes
    return outcome


def _group(probe: Probe) -> tuple[bool, float]:
    ok, median, _ = probe_group(probe)
    return ok, median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("sync", "async"), default="async")
    parser.add_argument("--rate", type=float, default=320.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--watch", type=float, default=90.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for name, value, top in (("--rate", args.rate, 2000), ("--seconds", args.seconds, 120),
                             ("--watch", args.watch, 600)):
        if not 0 < value <= top:
            parser.error(f"{name} {value:g}: must be in (0, {top}]")
    topology = topology_mod.load()
    url = topology.scoring_url(args.arch) + predict_path(args.arch)
    probe = Probe(url, json.loads(PAYLOAD), timeout_s=TIMEOUT_S)
    ok, idle = _group(probe)
    if not ok:
        print(f"error: {url} does not answer 200 before any load", file=sys.stderr)
        return 2
    print(f"{url}: idle probe median {idle:.1f} ms; {args.rate:g} req/s for "
          f"{args.seconds:g} s ...", flush=True)
    blast = asyncio.run(_blast(url, args.rate, args.seconds))
    print(f"load: {json.dumps(blast)}", flush=True)
    stopped = time.monotonic()
    curve, recovered_after = [], None
    while time.monotonic() - stopped < args.watch:
        ok, ms = _group(probe)
        t = round(time.monotonic() - stopped, 1)
        curve.append([t, ok, round(ms, 1)])
        print(f"  +{t:5.1f} s  probe median {ms:8.1f} ms  {'ok' if ok else 'ERROR'}", flush=True)
        if ok and ms <= max(1.5 * idle, idle + 10) and recovered_after is None:
            recovered_after = t
            break
        time.sleep(1.0)
    verdict = (f"back within 1.5x idle after {recovered_after} s" if recovered_after is not None
               else f"NOT back within 1.5x idle after {args.watch:g} s")
    print(verdict)
    if args.out:
        args.out.write_text(json.dumps({"url": url, "args": vars(args) | {"out": str(args.out)},
                                        "idle_ms": idle, "load": blast, "probes": curve,
                                        "recovered_after_s": recovered_after}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
