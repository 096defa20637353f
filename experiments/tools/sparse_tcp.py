"""Move the TCP connection records out of a result folder's resource CSVs into the sparse
<host>.tcp.jsonl beside them (hardware/tcplog.py), as runs collected since then store them.

Folders collected before that hold every connection as CSV columns repeated in every row (one
35 min run made a 14.7 MB CSV). For each raw/resources/<host>.csv with tcp columns this writes
the two new files aside, reads them back, checks that every sample (tcp included) equals the
original, and only then replaces the CSV; the manifest's list of collected resource files
then names the new file too, as a run collected now would. A CSV without tcp columns is left
as it is (so a second run changes nothing); an existing <host>.tcp.jsonl is never overwritten.

    python -m experiments.tools.sparse_tcp results/<run folder> [...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from experiments.results import write_json_atomic
from hardware import tcplog
from hardware.summary import read_samples_csv, write_resources


class ConvertError(RuntimeError):
    pass


def convert_csv(csv_path: Path) -> str:
    """Convert one resource CSV; returns what was done, one line."""
    samples = read_samples_csv(csv_path)  # file order kept: the rewritten CSV keeps its rows
    if not any("tcp" in svc for s in samples for svc in (s.get("services") or {}).values()):
        return f"{csv_path}: no tcp columns, left as it is"
    target = tcplog.sidecar(csv_path)
    if target.exists():
        raise ConvertError(f"{target} exists and {csv_path} still has tcp columns: "
                           "refusing to overwrite it")
    before = csv_path.stat().st_size
    with tempfile.TemporaryDirectory(dir=csv_path.parent, prefix=".sparse_tcp-") as tmp:
        new_csv = Path(tmp) / csv_path.name
        write_resources(samples, new_csv)
        again = read_samples_csv(new_csv)
        tcplog.attach(again, tcplog.read(tcplog.sidecar(new_csv)))
        if again != samples:
            bad = next(i for i, (a, b) in enumerate(zip(again, samples, strict=True)) if a != b)
            raise ConvertError(f"{csv_path}: the rewritten files do not give back sample "
                               f"{bad} (t={samples[bad]['t']}); nothing replaced")
        os.replace(tcplog.sidecar(new_csv), target)  # the records first: never a CSV without
        os.replace(new_csv, csv_path)
    return (f"{csv_path}: {before:,} B -> {csv_path.stat().st_size:,} B + {target.name} "
            f"{target.stat().st_size:,} B ({len(samples)} samples, {len(tcplog.read(target))} "
            "tcp lines; every sample read back equal)")


def list_in_manifest(folder: Path, csv_path: Path) -> bool:
    """Add <host>.tcp.jsonl after <host>.csv in manifest.json's collected.resources, if the
    manifest lists the CSV there; True if it changed."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return False
    manifest = json.loads(manifest_path.read_text())
    listed = (manifest.get("collected") or {}).get("resources")
    csv_rel = csv_path.relative_to(folder).as_posix()
    new_rel = tcplog.sidecar(csv_path).relative_to(folder).as_posix()
    if not isinstance(listed, list) or csv_rel not in listed or new_rel in listed:
        return False
    listed.insert(listed.index(csv_rel) + 1, new_rel)
    write_json_atomic(manifest_path, manifest)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tools.sparse_tcp",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="result folders")
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        resources = folder / "raw" / "resources"
        if not resources.is_dir():
            print(f"error: {folder}: no raw/resources/ folder (not a result folder?)",
                  file=sys.stderr)
            status = 2
            continue
        for csv_path in sorted(resources.glob("*.csv")):
            try:
                print(convert_csv(csv_path))
                if tcplog.sidecar(csv_path).exists() and list_in_manifest(folder, csv_path):
                    print(f"{folder / 'manifest.json'}: collected.resources lists "
                          f"{tcplog.sidecar(csv_path).name}")
            except (ConvertError, ValueError, OSError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
