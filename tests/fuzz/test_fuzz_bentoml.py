"""The bounded fuzz run's cases on the BentoML model server's endpoint, judged against the async
model API (the same contract, the same lab checks in front of a batcher).

Only the kinds the lab's own code answers (valid and broken bodies, content types, query
strings, extra headers): what HTTP parsing does before any app code runs is uvicorn's under
BentoML, without the lab's protocol class (the README's "BentoML model server" says so), and
the rest of the generator probes exactly that. Each case must get the async model API's status,
a documented body (no 5xx, the lab's error shape) and an answer in time.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import free_port, start_bentoml, start_service, stop
from tests.fuzz.generator import case
from tests.fuzz.run import body_problem, send
from tests.fuzz.test_fuzz import SEED

pytestmark = pytest.mark.slow

CASES = 400  # drawn for the model role; about 60 % are of the kinds below
KINDS = frozenset({"valid", "body", "content_type", "query", "headers"})
ENV = {"SCORING_LAB_WORKERS": "1", "SCORING_LAB_SLEEP_MIN_S": "0.002",
       "SCORING_LAB_SLEEP_MAX_S": "0.004",
       # The cases are not a load test: BentoML's 503 is not what is fuzzed here.
       "SCORING_LAB_BENTOML_MAX_LATENCY_MS": "30000"}
# uvicorn's own answer under BentoML to a request its parser refuses (a header it will not
# take, say), before the lab's code runs: the same status as the lab's, plain text.
UVICORN_PARSER_400 = b"Invalid HTTP request received."


def test_fuzz_bentoml_model_server_answers_as_the_async_model_api(tmp_path):
    ports = {"async": free_port(), "bentoml": free_port()}
    processes = [start_service("model", "async", ports["async"], ENV, tmp_path / "async.log")]
    try:
        processes.append(start_bentoml(ports["bentoml"], ENV, tmp_path / "bentoml.log"))
        made = [c for i in range(CASES) if (c := case(SEED, i, "model")).kind in KINDS]

        def one(made_case):
            # Both on the async predict path (BentoML answers both architectures' paths).
            return made_case, {name: send(port, "async", made_case)
                               for name, port in ports.items()}

        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(one, made))
    finally:
        for process in processes:
            stop(process, timeout=20)
    histogram: Counter = Counter()
    problems = []
    for made_case, replies in answered:
        bentoml, reference = replies["bentoml"], replies["async"]
        histogram[str(bentoml.status or bentoml.outcome)] += 1
        if bentoml.status is None:
            problems.append((made_case.kind, made_case.index, f"{bentoml.outcome}"))
        elif bentoml.status != reference.status:
            problems.append((made_case.kind, made_case.index,
                             f"bentoml {bentoml.status}, async {reference.status}"))
        elif bentoml.status == 400 and bentoml.body == UVICORN_PARSER_400:
            histogram["400 uvicorn"] += 1  # refused before any app code (documented)
        elif (problem := body_problem(made_case, bentoml)) is not None:
            problems.append((made_case.kind, made_case.index, problem))
    print(f"\nBentoML fuzz: {len(made)} cases, statuses {dict(sorted(histogram.items()))}")
    assert len(made) > CASES // 3, len(made)
    assert not problems, problems[:8]
