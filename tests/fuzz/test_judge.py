"""The fuzz oracle's judgement of admission control's answers (no servers): a refusal of
admission control is a documented answer only of stacks started with it on, and only with its
own error codes and Retry-After; any other 5xx stays a failure."""

from __future__ import annotations

import json

from tests.fuzz.client import Reply
from tests.fuzz.generator import Case
from tests.fuzz.run import Result, collect, judge

SCORING = Case(0, "valid", "POST", "/api/v1/ml/{arch}/predict", [("Content-Type",
                                                                  "application/json")], b"[1]")
SERVED = Reply(200, body=b'{"detail": 0.04}')


def refusal(code: str, retry_after: bool = True) -> Reply:
    body = json.dumps({"error": code, "message": "m", "status": 503}).encode()
    return Reply(503, headers={"retry-after": ["1"]} if retry_after else {}, body=body)


def test_refusal_is_documented_only_with_admission_on():
    replies = {"sync": SERVED, "async": refusal("overloaded")}
    assert judge(SCORING, replies, admission_on=True) == []
    off = judge(SCORING, replies)
    assert any("5xx" in p for p in off) and any("differ" in p for p in off)
    assert judge(SCORING, {"sync": refusal("deadline_exceeded"), "async": SERVED},
                 admission_on=True) == []


def test_other_answers_are_still_judged_with_admission_on():
    # Another 503, or an admission code without Retry-After: failures as before.
    for reply in (refusal("feature_store_unavailable"), refusal("overloaded", False)):
        assert judge(SCORING, {"sync": SERVED, "async": reply}, admission_on=True)
    # The architecture that answered is judged alone: a bad body there still fails.
    bad = Reply(200, body=b"<html>")
    assert judge(SCORING, {"sync": bad, "async": refusal("overloaded")}, admission_on=True)


def test_refusals_are_counted_apart_from_5xx():
    result = Result("scoring")
    collect(result, [(SCORING, {"sync": SERVED, "async": refusal("overloaded")})],
            admission_on=True)
    assert result.five_xx("async") == 0 and result.histogram["async"]["503 admission"] == 1
    assert not result.failures


GARBAGE = Case(0, "garbage", "GET", "", [], raw=b"GARBAGE\r\n\r\n")
LIE_LONG = Case(0, "lie_long", "POST", "/api/v1/ml/{arch}/predict",
                [("Content-Type", "application/json")], b"[1]", framing="lie_long",
                incomplete=True)


def test_granians_own_pages_are_documented_only_on_granian():
    page = Reply(400, headers={"connection": ["close"]}, body=b"")
    assert judge(GARBAGE, {"sync": page, "async": page}, server="granian") == []
    assert judge(GARBAGE, {"sync": page, "async": page})  # not an answer of the default servers
    # a bodiless answer of any other status is still no documented answer
    other = Reply(500, body=b"")
    assert judge(GARBAGE, {"sync": other, "async": other}, server="granian")


def test_granians_unbounded_body_wait_is_documented_for_sync_and_that_kind_only():
    hang = Reply(None, outcome="hang", elapsed_s=10.0)
    late = Reply(408, body=json.dumps({"error": "request_timeout", "status": 408,
                                       "message": "request not received within 3 s"}).encode())
    # sync's blocking thread waits; the async apps bound the body themselves (408)
    assert judge(LIE_LONG, {"sync": hang, "async": late}, server="granian") == []
    assert judge(LIE_LONG, {"sync": hang, "async": hang}, server="granian")  # async must not
    assert judge(LIE_LONG, {"sync": hang, "async": late})  # the default servers time it out
    assert judge(SCORING, {"sync": hang, "async": hang}, server="granian")  # a valid request
    assert judge(LIE_LONG, {"sync": SERVED, "async": late}, server="granian")  # not served
