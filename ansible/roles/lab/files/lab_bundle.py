#!/usr/bin/env python3
"""Pack the lab's sources into a reproducible tar on the controller (stdlib only).

Same sources -> byte-identical tar (sorted names, fixed mtime/owner/mode), so Ansible's copy
only reports a change when a source or the lock changed. __pycache__ and *.pyc are left out.
The tar is rewritten only when its bytes differ. Prints one JSON line:
{"changed": bool, "path": str, "sha1": str, "files": int}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".venv"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def collect(root: str, entries: list[str]) -> list[str]:
    files: list[str] = []
    for entry in entries:
        path = os.path.join(root, entry)
        if os.path.isfile(path):
            files.append(entry)
        elif os.path.isdir(path):
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
                for name in filenames:
                    if not name.endswith(SKIP_SUFFIXES):
                        files.append(os.path.relpath(os.path.join(dirpath, name), root))
        else:
            sys.exit(f"lab_bundle: {path} does not exist (is --root the repository root?)")
    return sorted(files)


def build(root: str, files: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            full = os.path.join(root, rel)
            info = tarfile.TarInfo(rel)
            info.size = os.path.getsize(full)
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if os.access(full, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(full, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="repository root on the controller")
    parser.add_argument("--out", required=True, help="tar file to write")
    parser.add_argument("entries", nargs="+", help="files and directories under --root")
    args = parser.parse_args()
    files = collect(args.root, args.entries)
    data = build(args.root, files)
    old = None
    if os.path.exists(args.out):
        with open(args.out, "rb") as handle:
            old = handle.read()
    changed = old != data
    if changed:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, args.out)
    print(
        json.dumps(
            {
                "changed": changed,
                "path": args.out,
                "sha1": hashlib.sha1(data).hexdigest(),
                "files": len(files),
            }
        )
    )


if __name__ == "__main__":
    main()
