"""The bounded fuzz run of ``make test`` (about a minute): the same generator, oracle and real
servers as ``make fuzz`` (``python -m tests.fuzz``), fewer cases per role.

Two tests, so a failure says where it comes from: the cases of every kind but the meinheld_*
ones, then the meinheld_* kinds (chunked trailers, CONNECT/Upgrade, oversized heads): those
meinheld defects the lab contains must answer as documented, the uncontained ones must still
behave exactly as the README says (the trailer kills one worker, which the master replaces),
and the sync services must serve again right after.
"""

from __future__ import annotations

import pytest

from tests.conftest import http_ok, wait_until
from tests.fuzz.run import (
    H11_DIFFERENCES,
    JOB_ROLE,
    ROLES,
    h11_refuses,
    report,
    run_role,
    stacks,
)

pytestmark = pytest.mark.slow

SEED = 20261130
CASES_PER_ROLE = 250


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with stacks(tmp_path_factory.mktemp("fuzz")) as stack:
        yield stack


@pytest.mark.parametrize("meinheld_kinds", [False, True], ids=["app-kinds", "meinheld-kinds"])
def test_fuzz_both_architectures(servers, meinheld_kinds):
    results = [run_role(servers, role, SEED, CASES_PER_ROLE,
                        kinds=lambda kind: kind.startswith("meinheld_") == meinheld_kinds)
               for role in ROLES]
    failures = [f for r in results for f in r.failures]
    died = any(pids for r in results for pids in r.died.values())
    assert not failures and not died, (
        report(results) + "\nfirst failures:\n"
        + "\n".join(f"{f['kind']} #{f['case']}: {f['problems']}" for f in failures[:8]))
    for (role, arch), port in servers.ports.items():
        wait_until(lambda port=port: http_ok(f"http://127.0.0.1:{port}/api/v1/healthcheck"),
                   timeout=10, what=f"{role}-{arch} serving again")


def test_fuzz_with_admission_control(tmp_path):
    """Scoring cases against stacks with a tight bound (one request per worker) and deadlines
    read: the bound's 503s are counted apart and every other answer is judged as without it."""
    env = {"SCORING_LAB_ADMISSION_LIMIT": "1", "SCORING_LAB_ADMISSION_DEADLINES": "true"}
    with stacks(tmp_path, env) as stack:
        assert stack.admission
        result = run_role(stack, "scoring", SEED, 100,
                          kinds=lambda kind: not kind.startswith("meinheld_"))
    assert not result.failures and not any(result.died.values()), (
        report([result]) + "\n" + "\n".join(str(f["problems"]) for f in result.failures[:8]))
    assert result.five_xx("sync") == result.five_xx("async") == 0

def test_fuzz_model_apis_on_a_device_with_micro_batching(tmp_path):
    """The model APIs on one device slot, the async one micro-batching: hostile requests are
    refused before they join a batch and answer as without either (fewer cases: one role)."""
    device = {"SCORING_LAB_DEVICE_SLOTS": "1"}
    model_env = {"sync": device, "async": {**device, "SCORING_LAB_MODEL_BATCHING": "micro",
                                           "SCORING_LAB_MODEL_BATCH_MAX_WAIT_MS": "2"}}
    with stacks(tmp_path, model_env=model_env) as stack:
        result = run_role(stack, "model", SEED, 120,
                          kinds=lambda kind: not kind.startswith("meinheld_"))
    assert not result.failures and not any(result.died.values()), (
        report([result]) + "\nfirst failures:\n"
        + "\n".join(f"{f['kind']} #{f['case']}: {f['problems']}" for f in result.failures[:8]))


def test_fuzz_job_endpoints(tmp_path):
    """The scoring services' job endpoints (submit, poll), with their queue workers running:
    hostile submits are refused as the predict endpoint refuses them, polls of ids the lab did
    not make are 404, and nothing is a 5xx (no fault is injected)."""
    with stacks(tmp_path, queue_workers=True) as stack:
        result = run_role(stack, JOB_ROLE, SEED, 150,
                          kinds=lambda kind: not kind.startswith("meinheld_"))
    assert not result.failures and not any(result.died.values()), (
        report([result]) + "\nfirst failures:\n"
        + "\n".join(f"{f['kind']} #{f['case']}: {f['problems']}" for f in result.failures[:8]))
    assert result.five_xx("sync") == result.five_xx("async") == 0
    # the cases reached the queues: some submits were accepted
    assert result.histogram["sync"]["202"] > 0 and result.histogram["async"]["202"] > 0


def test_fuzz_async_on_uvicorns_h11_parser(tmp_path):
    """The async services on uvicorn with h11 (services/async_app/h11_protocol.py), the sync ones
    as deployed: every answer judged as on httptools, but for h11's own documented
    differences (H11_DIFFERENCES, h11_refuses)."""
    with stacks(tmp_path, arch_env={"async": {"SCORING_LAB_UVICORN_HTTP": "h11"}},
                differences=H11_DIFFERENCES, async_refuses=h11_refuses) as stack:
        results = [run_role(stack, role, SEED, 100,
                            kinds=lambda kind: not kind.startswith("meinheld_"))
                   for role in ROLES]
    failures = [f for r in results for f in r.failures]
    assert not failures and not any(p for r in results for p in r.died.values()), (
        report(results) + "\nfirst failures:\n"
        + "\n".join(f"{f['kind']} #{f['case']}: {f['problems']}" for f in failures[:8]))
    assert sum(r.five_xx("async") for r in results) == 0


def test_fuzz_on_granian(tmp_path):
    """Both architectures on granian (SCORING_LAB_SERVER=granian): one HTTP parser (hyper) in
    front of Flask and FastAPI, so the two answer every case alike, granian's own pages listed
    in the oracle (tests/fuzz/run.py, GRANIAN_PAGES). meinheld_* kinds are meinheld's."""
    env = {"SCORING_LAB_SERVER": "granian"}
    with stacks(tmp_path, env) as stack:
        assert stack.server == "granian"
        results = [run_role(stack, role, SEED, 100,
                            kinds=lambda kind: not kind.startswith("meinheld_"))
                   for role in ROLES]
    failures = [f for r in results for f in r.failures]
    assert not failures and not any(pids for r in results for pids in r.died.values()), (
        report(results) + "\nfirst failures:\n"
        + "\n".join(f"{f['kind']} #{f['case']}: {f['problems']}" for f in failures[:8]))
    assert sum(r.five_xx(arch) for r in results for arch in ("sync", "async")) == 0
