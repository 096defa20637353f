"""Server-side profiling (services/profiling.py): off by default, on only with a run dir, files
only under <run_dir>/profiles with names the service chooses, bad header values refused, and
window profiles written by every worker of a real server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from experiments.exp1_profiling.breakdown import pyinstrument_breakdown, yappi_top
from services import profiling
from services.async_app import model_api as async_model
from services.settings import Settings
from services.sync_app import model_api as sync_model
from tests.conftest import free_port, start_service, stop

BODY = [5.1, 3.5, 1.4, 0.2]
NAME = re.compile(r"^model-(sync|async)_\d+_\d{8}T\d{9}Z_\d{4}_(req|win-[0-9a-f]+)_"
                  r"(pyinstrument|yappi-wall|yappi-cpu)$")


def _settings(run_dir: Path | None, on: bool, **extra) -> Settings:
    return Settings(profiling=on, run_dir=str(run_dir) if run_dir else None,
                    service="", sleep_min_s=0.02, sleep_max_s=0.02, **extra)


class Client:
    """The same calls through Flask's test client or FastAPI's TestClient."""

    def __init__(self, arch: str, settings: Settings):
        self.arch = arch
        self.path = f"/api/v1/ml/{arch}/predict"
        if arch == "sync":
            self._client = sync_model.create_app(settings).test_client()
            self._ctx = None
        else:
            self._ctx = TestClient(async_model.create_app(settings))
            self._client = self._ctx.__enter__()

    def post(self, **headers: str):
        response = self._client.post(self.path, json=BODY, headers=headers)
        body = response.get_json() if self.arch == "sync" else response.json()
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, body

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)


@pytest.fixture(params=["sync", "async"])
def arch(request) -> str:
    return request.param


def _client(arch: str, tmp_path: Path, on: bool = True, **extra) -> Client:
    return Client(arch, _settings(tmp_path / "run", on, **extra))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_profiling_needs_a_run_dir():
    with pytest.raises(ValidationError, match="PROFILING=true needs SCORING_LAB_RUN_DIR"):
        Settings(profiling=True, run_dir=None)
    assert Settings().profiling is False


def test_off_by_default_the_header_is_ignored_and_nothing_is_written(arch, tmp_path):
    (tmp_path / "run").mkdir()
    client = _client(arch, tmp_path, on=False)
    try:
        status, headers, body = client.post(**{profiling.PROFILE_HEADER: "pyinstrument"})
        status2, headers2, _ = client.post(**{profiling.PROFILE_HEADER: "../../etc/passwd",
                                              profiling.WINDOW_HEADER: "5"})
    finally:
        client.close()
    assert status == status2 == 200 and body["detail"] > 0
    for h in (headers, headers2):
        assert not any(k.startswith("x-scoring-lab-profile") for k in h)
    assert _tree(tmp_path) == set()


@pytest.mark.parametrize("profiler", ["pyinstrument", "yappi"])
def test_a_profiled_request_writes_named_files_under_run_dir_profiles(arch, profiler, tmp_path):
    client = _client(arch, tmp_path)
    try:
        status, headers, body = client.post(**{profiling.PROFILE_HEADER: profiler})
    finally:
        client.close()
    assert status == 200 and body["detail"] > 0
    assert headers[profiling.STATUS_HEADER.lower()] == "written"
    name = headers[profiling.FILE_HEADER.lower()]
    assert NAME.match(name), name
    suffixes = ({".html", ".txt", ".pyisession", ".meta.json"} if profiler == "pyinstrument"
                else {".txt", ".callgrind", ".prof", ".json", ".meta.json"})
    assert _tree(tmp_path) == {f"run/profiles/{name}{s}" for s in suffixes}
    meta = json.loads((tmp_path / "run/profiles" / f"{name}.meta.json").read_text())
    clock = "wall" if profiler == "pyinstrument" or arch == "async" else "cpu"
    assert (meta["profiler"], meta["clock"], meta["kind"]) == (profiler, clock, "request")
    assert meta["service"] == f"model-{arch}" and meta["path"].endswith("/predict")
    text = (tmp_path / "run/profiles" / f"{name}.txt").read_text()
    assert f"profiler: {profiler}, clock: {clock}" in text
    if profiler == "pyinstrument":
        # The real small profile: the model's 20 ms sleep is most of the request.
        breakdown = pyinstrument_breakdown(tmp_path / "run/profiles" / f"{name}.pyisession")
        assert breakdown["share"]["prediction"] > 0.6, breakdown
        assert breakdown["seconds"]["prediction"] == pytest.approx(0.02, abs=0.01)
        if arch == "async":
            assert meta["async_mode"] == "enabled"
    else:
        top = yappi_top(tmp_path / "run/profiles" / f"{name}.json")
        assert top["clock"] == clock and top["top"]


@pytest.mark.parametrize("headers", [
    {profiling.PROFILE_HEADER: "cprofile"},
    {profiling.PROFILE_HEADER: "../../../tmp/evil"},
    {profiling.PROFILE_HEADER: "/etc/passwd"},
    {profiling.PROFILE_HEADER: "pyinstrument", profiling.WINDOW_HEADER: "0"},
    {profiling.PROFILE_HEADER: "pyinstrument", profiling.WINDOW_HEADER: "31"},
    {profiling.PROFILE_HEADER: "pyinstrument", profiling.WINDOW_HEADER: "../x"},
    {profiling.WINDOW_HEADER: "nan"},
])
def test_bad_header_values_get_400_in_the_lab_shape_and_write_nothing(arch, headers, tmp_path):
    client = _client(arch, tmp_path)
    try:
        status, _, body = client.post(**headers)
    finally:
        client.close()
    assert status == 400
    assert body["error"] == "invalid_profile_request" and body["status"] == 400
    assert body["message"]
    assert not (tmp_path / "run/profiles").exists() or _tree(tmp_path / "run/profiles") == set()
    assert not Path("/tmp/evil").exists()


def test_profiles_stop_at_the_disk_cap_and_requests_still_succeed(arch, tmp_path, caplog):
    """Past SCORING_LAB_PROFILES_MAX_BYTES nothing more is written (requests and windows),
    every request still gets its 200, and the refusals are counted and logged."""
    # A cap of 1 byte: the directory is under it only while empty, so exactly one profile fits
    # (a profile already started may end past the cap).
    client = _client(arch, tmp_path, profiles_max_bytes=1)
    profiles = tmp_path / "run/profiles"
    try:
        statuses = []
        for _ in range(3):
            status, headers, body = client.post(**{profiling.PROFILE_HEADER: "pyinstrument"})
            assert status == 200 and body["detail"] > 0
            statuses.append(headers[profiling.STATUS_HEADER.lower()])
        written = _tree(profiles)
        status, headers, _ = client.post(**{profiling.PROFILE_HEADER: "yappi",
                                            profiling.WINDOW_HEADER: "1"})
        assert status == 200 and headers[profiling.STATUS_HEADER.lower()] == "capped"
        assert profiling.WINDOW_ID_HEADER.lower() not in headers
        status, _, _ = client.post()
        assert status == 200
    finally:
        client.close()
    assert statuses == ["written", "capped", "capped"]
    assert _tree(profiles) == written  # no window marker, no second profile
    refusals = [r for r in caplog.records if "profile not written" in r.getMessage()]
    assert refusals and "1 refused so far" in refusals[0].getMessage()


def test_a_zero_cap_writes_nothing_and_an_unwritable_directory_is_no_error(arch, tmp_path):
    zero = _client(arch, tmp_path / "a", profiles_max_bytes=0)
    try:
        status, headers, _ = zero.post(**{profiling.PROFILE_HEADER: "pyinstrument"})
    finally:
        zero.close()
    assert status == 200 and headers[profiling.STATUS_HEADER.lower()] == "capped"
    assert not (tmp_path / "a/run/profiles").exists()
    # The profiles directory cannot be created (a file is in the way): served unprofiled.
    (tmp_path / "b/run").mkdir(parents=True)
    (tmp_path / "b/run/profiles").write_text("not a directory")
    blocked = _client(arch, tmp_path / "b")
    try:
        status, headers, body = blocked.post(**{profiling.PROFILE_HEADER: "pyinstrument"})
    finally:
        blocked.close()
    assert status == 200 and body["detail"] > 0
    assert headers[profiling.STATUS_HEADER.lower()] == "not-written"


def test_a_window_profiles_the_next_requests_of_the_worker(arch, tmp_path):
    client = _client(arch, tmp_path)
    try:
        status, headers, _ = client.post(**{profiling.PROFILE_HEADER: "pyinstrument",
                                            profiling.WINDOW_HEADER: "1"})
        window_id = headers[profiling.WINDOW_ID_HEADER.lower()]
        assert headers[profiling.STATUS_HEADER.lower()] == "window-started"
        _, inside, _ = client.post()
        _, busy, _ = client.post(**{profiling.PROFILE_HEADER: "yappi"})
        assert busy[profiling.STATUS_HEADER.lower()] == "in-window"
        time.sleep(1.1)
        client.post()  # the first request after the window closes it
    finally:
        client.close()
    assert status == 200 and not any(k.startswith("x-scoring-lab") for k in inside)
    files = _tree(tmp_path / "run/profiles")
    names = {f.split(".")[0] for f in files if not f.startswith(".window")}
    assert len(names) == 1, files
    (name,) = names
    assert f"_win-{window_id}_" in name and NAME.match(name)
    meta = json.loads((tmp_path / "run/profiles" / f"{name}.meta.json").read_text())
    assert meta["kind"] == "window" and meta["requests"] >= 3 and meta["window_s"] == 1
    assert meta["async_mode"] == "disabled"  # the whole thread, not one request's task


@pytest.mark.slow
def test_window_of_a_real_server_is_written_by_every_worker(tmp_path):
    """gunicorn (meinheld) and uvicorn with two workers: one trigger, one file per worker."""
    run = tmp_path / "run"
    for arch in ("sync", "async"):
        port = free_port()
        process = start_service("model", arch, port, {
            "SCORING_LAB_PROFILING": "true", "SCORING_LAB_RUN_DIR": str(run),
            "SCORING_LAB_WORKERS": "2"}, tmp_path / f"{arch}.log")
        url = f"http://127.0.0.1:{port}/api/v1/ml/{arch}/predict"

        def post(headers, url=url):
            request = urllib.request.Request(url, data=json.dumps(BODY).encode(), headers={
                "Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.headers
            except urllib.error.HTTPError as error:
                return error.code, error.headers

        try:
            status, headers = post({profiling.PROFILE_HEADER: "pyinstrument",
                                    profiling.WINDOW_HEADER: "1.5"})
            assert status == 200
            window_id = headers[profiling.WINDOW_ID_HEADER]
            assert post({profiling.PROFILE_HEADER: "~/.ssh/id_rsa"})[0] == 400
            deadline = time.monotonic() + 6  # bounded: plain requests during and after it
            while time.monotonic() < deadline:
                post({})
        finally:
            stop(process)
        metas = sorted(run.glob(f"profiles/model-{arch}_*_win-{window_id}_*.meta.json"))
        pids = {json.loads(m.read_text())["pid"] for m in metas}
        assert len(pids) == 2, metas
    assert {p.parent for p in run.rglob("*") if p.is_file()} == {run / "profiles"}
