"""The samples' TCP connection records, stored apart from the CSV and only when they change.

The sampler records per service process its connections to other lab service processes
(``services.<name>.tcp`` = {"<pid>": ["local->peer", ...]}, hardware/sampler.py). Flattened
into the wide resource CSV, every connection became a column repeated in every row: a 35 min
run with connection churn made a 14.7 MB CSV. The sets change far less often than they are
sampled, so a result folder keeps them in ``raw/resources/<host>.tcp.jsonl`` beside
``<host>.csv``, one JSON line per change, holding only what changed:

    {"t": <sample time>, "services": {"<service>": null | {"<pid>": <pid change>, ...}}}

    <pid change>:  ["local->peer", ...]         the pid's whole new list
                 | {"-": [...], "+": [...]}     drop these, then append these (either may be absent)
                 | null                         the pid no longer has a list

- A service's value null: it has no ``tcp`` record from that sample on (stopped, or not in the
  sample). An object: its ``tcp`` is the previous one (or {} if it had none) with these pid
  changes applied; an empty object means "now recorded, no connections".
- The first line is written at the first sample, with every service's whole record (possibly
  none); after it, a line only at a sample where some service's ``tcp`` differs from the
  sample before. A delta is used only where it rebuilds the list exactly, order included
  (the sampler lists a pid's connections by socket inode), else the whole list.
- A service's ``tcp`` at any sample is the state after the last line at or before that
  sample's time. Samples sharing one time (a restarted sampler) get a line each, in order.

`split` + `attach` are exact inverses: attach(split(samples)) gives back every sample's
``tcp`` equal to what it was, and no other field is touched. On experiment 3's 35 min run
(2109 samples) the whole lists per change took 3.6 MB, the deltas 0.7 MB.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

SUFFIX = ".tcp.jsonl"  # raw/resources/<host>.tcp.jsonl beside <host>.csv
# Written gzipped since a 50 min run with BentoML's connection churn made 3.3 MB of deltas
# (over the 2 MiB a committed result file may hold); folders from before keep plain files.
GZ_SUFFIX = SUFFIX + ".gz"


def sidecar(csv_path: str | Path) -> Path:
    """raw/resources/<host>.csv -> the <host>.tcp.jsonl.gz beside it, or the plain
    <host>.tcp.jsonl of an older folder when only that exists (what to read)."""
    path = Path(csv_path)
    plain = path.with_name(path.stem + SUFFIX)
    return plain if plain.exists() and not gz_sidecar(path).exists() else gz_sidecar(path)


def gz_sidecar(csv_path: str | Path) -> Path:
    """raw/resources/<host>.csv -> raw/resources/<host>.tcp.jsonl.gz (what to write)."""
    path = Path(csv_path)
    return path.with_name(path.stem + GZ_SUFFIX)


def _tcp_of(sample: dict) -> dict[str, dict]:
    return {name: svc["tcp"] for name, svc in (sample.get("services") or {}).items()
            if isinstance(svc, dict) and "tcp" in svc}


def _pid_change(old: list[str] | None, new: list[str] | None) -> list[str] | dict | None:
    if old is None or new is None:
        return new
    gone, came = set(old) - set(new), set(new) - set(old)
    drop, add = [c for c in old if c in gone], [c for c in new if c in came]
    if len(drop) + len(add) < len(new) and _apply(old, {"-": drop, "+": add}) == new:
        return {k: v for k, v in (("-", drop), ("+", add)) if v}
    return new


def _apply(old: list[str] | None, change: list[str] | dict) -> list[str]:
    if isinstance(change, list):
        return change
    drop = set(change.get("-", ()))
    return [c for c in old or () if c not in drop] + list(change.get("+", ()))


def _service_change(old: dict | None, new: dict | None) -> dict | None:
    if new is None:
        return None
    before = old or {}
    return {pid: _pid_change(before.get(pid), new.get(pid))
            for pid in [*before, *(p for p in new if p not in before)]
            if before.get(pid) != new.get(pid)}


def split(samples: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """(samples without their tcp records (copies), the change records); no records at all
    when no sample has a tcp record (older sampler, or none of its services)."""
    samples = list(samples)
    # A line is told from its sample by time; samples sharing one time (a restarted sampler)
    # each get a line, even an empty one, so that none takes another's.
    shared = {t for t, n in Counter(s["t"] for s in samples).items() if n > 1}
    bare, records = [], []
    before: dict[str, dict] | None = None
    any_tcp = False
    for sample in samples:
        now = _tcp_of(sample)
        any_tcp = any_tcp or bool(now)
        prev = before or {}
        changed = {name: _service_change(prev.get(name), now.get(name))
                   for name in [*prev, *(n for n in now if n not in prev)]
                   if prev.get(name) != now.get(name)}
        if before is None or changed or sample["t"] in shared:
            records.append({"t": sample["t"], "services": changed})
        before = now
        if now:
            sample = copy.copy(sample)
            sample["services"] = {
                name: ({k: v for k, v in svc.items() if k != "tcp"} if name in now else svc)
                for name, svc in sample["services"].items()}
        bare.append(sample)
    return bare, records if any_tcp else []


def _advance(state: dict[str, dict | None], record: dict) -> None:
    for name, change in record["services"].items():
        if change is None:
            state[name] = None
            continue
        tcp = dict(state.get(name) or {})  # a new dict: the old one may be attached already
        for pid, pid_change in change.items():
            if pid_change is None:
                tcp.pop(pid, None)
            else:
                tcp[pid] = _apply(tcp.get(pid), pid_change)
        state[name] = tcp


def attach(samples: Sequence[dict], records: Iterable[dict]) -> None:
    """Put each service's tcp back into samples (in time order), in place. The dicts are
    shared between the samples of one unchanged stretch: read them, don't edit them."""
    pending = iter(records)
    nxt = next(pending, None)
    state: dict[str, dict | None] = {}
    for sample in samples:
        t = sample["t"]
        while nxt is not None and nxt["t"] < t:  # lines of samples not in this list
            _advance(state, nxt)
            nxt = next(pending, None)
        if nxt is not None and nxt["t"] == t:  # this sample's own line (at most one)
            _advance(state, nxt)
            nxt = next(pending, None)
        services = sample.get("services") or {}
        for name, tcp in state.items():
            if tcp is not None and isinstance(services.get(name), dict):
                services[name]["tcp"] = tcp


def write(records: Sequence[dict], path: str | Path) -> None:
    """One JSON line per record; gzipped when the name ends in .gz (no time in its header:
    the same records give the same bytes)."""
    text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
    if str(path).endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                     filename="") as f:
            f.write(text.encode())
    else:
        Path(path).write_text(text)


def read(path: str | Path) -> list[dict]:
    path = Path(path)
    records = []
    text = (gzip.decompress(path.read_bytes()).decode() if path.name.endswith(".gz")
            else path.read_text())
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record.get("services"), dict):
                raise ValueError("no services object")
            float(record["t"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}:{number}: not a tcp record ({exc})") from None
        records.append(record)
    return records
