"""Experiment 9's per-request analysis (experiments/analysis/timeline.py) on synthetic records:
what each request's kind is, goodput per window, time to detect and to recover, lost and wrong
answers, and when goodput comes back after a trigger."""

from __future__ import annotations

import math

import pytest

from experiments.analysis.timeline import (
    Record,
    classify,
    fault_effect,
    goodput_return_s,
    read_records,
    shifted,
    summarise,
    windows,
)

T0 = 1_700_000_000.0


def ok(t: float, latency_ms: float = 50.0) -> Record:
    """An answer to a request scheduled at T0 + t, sent on time, latency_ms later."""
    return Record(T0 + t, T0 + t, latency_ms, 200, True)


def failed(t: float, status: int = 504, error: str = "HTTP 504", rt_ms: float = 10.0) -> Record:
    return Record(T0 + t, T0 + t, rt_ms, status, False, error)


@pytest.mark.parametrize(("status", "is_ok", "error", "kind"), [
    (200, True, "", "ok"),
    (200, False, "detail is not a number: None", "wrong_answer"),
    (503, False, "HTTP 503", "503"),
    (504, False, "HTTP 504", "504"),
    (502, False, "HTTP 502", "502"),
    (500, False, "HTTP 500", "other"),
    (0, False, "HTTP 0: ConnectionResetError: [Errno 104] Connection reset by peer", "reset"),
    (0, False, "HTTP 0: HTTPConnectionClosed: connection closed.", "reset"),
    (0, False, "HTTP 0: ConnectionRefusedError: [Errno 111] Connection refused", "refused"),
    (0, False, "HTTP 0: timeout: timed out", "client_timeout"),
    (0, False, "unfinished when the step ended", "unfinished"),
])
def test_each_request_has_one_kind(status, is_ok, error, kind):
    assert classify(status, is_ok, error) == kind


def test_latency_counts_from_the_schedule_not_the_send():
    late = Record(T0, T0 + 0.2, 50.0, 200, True)  # sent 200 ms late: the queue is the system's
    assert late.latency_ms == pytest.approx(250.0)
    s = summarise([late, ok(0.5, 100.0)], 1.0, bound_ms=200.0)
    assert s.good == 1 and s.answered == 2 and s.goodput_rps == 1.0


def test_a_summary_counts_goodput_errors_lost_and_wrong():
    records = [ok(t / 10) for t in range(10)] + [
        ok(1.0, 400.0),                        # answered, but past the bound
        failed(1.1, 503, "HTTP 503"),
        failed(1.2, 0, "HTTP 0: timeout: timed out"),
        failed(1.3, 0, "unfinished when the step ended"),
        failed(1.4, 200, "bad JSON body"),
    ]
    s = summarise(records, 2.0, bound_ms=250.0)
    assert (s.requests, s.answered, s.good) == (15, 11, 10)
    assert s.offered_rps == 7.5 and s.goodput_rps == 5.0
    assert s.errors["503"] == 1 and s.errors["client_timeout"] == 1 and s.errors["504"] == 0
    assert s.lost == 2 and s.wrong == 1
    assert s.p50_ms == pytest.approx(50.0) and 50.0 < s.p99_ms <= 400.0
    with pytest.raises(ValueError, match="span_s = 0"):
        summarise(records, 0, 250.0)


def test_windows_bucket_by_scheduled_time():
    records = [ok(0.1), ok(0.2), ok(1.5, 300.0), failed(1.6), ok(2.5)]
    ws = windows(records, T0, T0 + 3, 1.0, bound_ms=250.0)
    assert [w.t for w in ws] == [0.0, 1.0, 2.0]
    assert [w.offered for w in ws] == [2, 2, 1]
    assert [w.goodput_rps for w in ws] == [2.0, 0.0, 1.0]
    assert [w.good for w in ws] == [2, 0, 1] and [w.good_share for w in ws] == [1.0, 0.0, 1.0]
    assert ws[1].errors == {"504": 1} and ws[0].errors == {}
    assert ws[1].p99_ms == pytest.approx(300.0)
    with pytest.raises(ValueError, match="width_s"):
        windows(records, T0, T0 + 3, 0.0, 250.0)


def _run_with_fault(recover_at: float) -> list[Record]:
    """10 req/s for 20 s; a fault in [5, 10): every request fails; slow answers until
    recover_at, normal ones after."""
    out = []
    for k in range(200):
        t = k / 10
        if 5 <= t < 10:
            out.append(failed(t, 0, "HTTP 0: ConnectionResetError: reset", rt_ms=300.0))
        elif 10 <= t < recover_at:
            out.append(ok(t, 500.0))
        else:
            out.append(ok(t, 50.0))
    return out


def test_fault_effect_detect_recover_and_lost():
    e = fault_effect(_run_with_fault(13.0), T0 + 5, T0 + 10, T0 + 20)
    assert e.baseline_p99_ms == pytest.approx(50.0)
    assert e.detect_s == pytest.approx(0.3)  # the first failure's answer, 300 ms after
    assert e.detect_by == "error"
    assert e.recover_s == pytest.approx(3.0)
    assert e.failed == 50 and e.lost == 50 and e.wrong == 0 and e.errors == {"reset": 50}


def test_a_fault_nobody_noticed_has_no_detection_and_recovers_at_once():
    records = [ok(k / 10) for k in range(100)]
    e = fault_effect(records, T0 + 3, T0 + 5, T0 + 10)
    assert e.detect_s is None and e.detect_by is None and e.recover_s == 0.0 and e.failed == 0


def test_a_fault_that_fails_nothing_is_detected_in_latency():
    # the model 3x slower: every answer still 200, 150 ms instead of 50 from the fault's start
    records = [ok(k / 10, 150.0 if 5 <= k / 10 < 10 else 50.0) for k in range(200)]
    e = fault_effect(records, T0 + 5, T0 + 10, T0 + 20)
    assert e.detect_by == "latency" and e.detect_s == pytest.approx(0.15)
    assert e.failed == 0 and e.recover_s == pytest.approx(0.0)
    # within tolerance x the pre-fault p99 it is not a detection
    mild = [ok(k / 10, 70.0 if 5 <= k / 10 < 10 else 50.0) for k in range(200)]
    assert fault_effect(mild, T0 + 5, T0 + 10, T0 + 20).detect_s is None
    # nor is a slow answer to a request sent after the fault's end: that one is noise
    late = [ok(k / 10, 150.0 if k == 130 else 50.0) for k in range(200)]
    assert fault_effect(late, T0 + 5, T0 + 10, T0 + 20).detect_s is None


def test_a_stack_that_never_recovers_says_so():
    e = fault_effect(_run_with_fault(99.0), T0 + 5, T0 + 10, T0 + 20)
    assert e.recover_s is None


def test_recovery_ignores_an_early_good_window_before_a_relapse():
    records = _run_with_fault(13.0)
    records = [r for r in records if not 15 <= r.scheduled - T0 < 16] + [
        failed(15.5, 504, "HTTP 504")]
    e = fault_effect(records, T0 + 5, T0 + 10, T0 + 20)
    assert e.recover_s == pytest.approx(6.0)  # from 16 s on, healthy for good


def test_the_control_timeline_takes_the_schedules_own_late_windows_off_the_fault():
    # a cluster of arrivals at 15-16 s is late with or without the fault (a stack with a
    # handful of slots): against the control, the stack is back at the fault's end + 3 s
    def cluster(records):
        return [ok(r.scheduled - T0, 180.0) if 15 <= r.scheduled - T0 < 16 else r
                for r in records]
    faulted = cluster(_run_with_fault(13.0))
    assert fault_effect(faulted, T0 + 5, T0 + 10, T0 + 20).recover_s == pytest.approx(6.0)
    # the control ran earlier on its own clock: shifted onto this run's schedule
    control = shifted(cluster([ok(k / 10) for k in range(200)]), 0.0)
    earlier = [Record(r.scheduled - 100, r.start - 100, r.rt_ms, r.status, r.ok)
               for r in control]
    ref = shifted(earlier, 100.0)
    assert [r.scheduled for r in ref] == [r.scheduled for r in control]
    e = fault_effect(faulted, T0 + 5, T0 + 10, T0 + 20, control=ref)
    assert e.recover_s == pytest.approx(3.0)
    # the control excuses no more than it showed: a later window worse than its own still
    # counts, and so does a failure the control did not have
    worse = [ok(r.scheduled - T0, 400.0) if 17 <= r.scheduled - T0 < 18 else r
             for r in faulted]
    assert fault_effect(worse, T0 + 5, T0 + 10, T0 + 20, control=ref).recover_s == \
        pytest.approx(8.0)
    broken = [*faulted, failed(15.5, 504, "HTTP 504")]
    assert fault_effect(broken, T0 + 5, T0 + 10, T0 + 20, control=ref).recover_s == \
        pytest.approx(6.0)


def test_fault_effect_refuses_times_out_of_order():
    with pytest.raises(ValueError, match="fault_start <= fault_end <= run_end"):
        fault_effect([], T0 + 5, T0 + 4, T0 + 10)


def test_goodput_return_after_a_trigger():
    ws = windows([ok(k / 10, 400.0 if 5 <= k / 10 < 9 else 50.0) for k in range(150)],
                 T0, T0 + 15, 1.0, bound_ms=250.0)
    assert goodput_return_s(ws, 7.0) == pytest.approx(2.0)
    assert math.isclose(goodput_return_s(ws, 10.0), 0.0)
    # a late window that serves too few of its arrivals in time: not back within the run
    relapse = windows([ok(k / 10, 400.0 if k >= 140 else 50.0) for k in range(150)],
                      T0, T0 + 15, 1.0, bound_ms=250.0)
    assert goodput_return_s(relapse, 7.0) is None


def test_goodput_return_reads_each_windows_own_arrivals_not_the_nominal_rate():
    # Poisson arrivals around 10/s: windows of 4, 12, 7 arrivals, every one answered in time.
    # Against a nominal 10 req/s the 4- and 7-arrival windows would read as goodput lost.
    times = [0.1, 0.3, 0.5, 0.7] + [1 + k / 12 for k in range(12)] + [2 + k / 7 for k in range(7)]
    ws = windows([ok(t) for t in times] + [ok(3.5)], T0, T0 + 5, 1.0, bound_ms=250.0)
    assert [w.offered for w in ws] == [4, 12, 7, 1, 0]
    assert goodput_return_s(ws, 0.0) == 0.0  # an empty window says nothing against it


def test_read_records_takes_the_error_column_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "requests_1.csv"
    path.write_text("start_unix,response_time_ms,status,ok,error,scheduled_unix\n"
                    f"{T0 + 1:.6f},12.5,200,1,,{T0:.6f}\n"
                    f"{T0 + 2:.6f},3.0,0,0,HTTP 0: timeout: timed out,{T0 + 2:.6f}\n"
                    f"{T0 + 3:.6f},1")
    rs = read_records([path])
    assert [r.kind for r in rs] == ["ok", "client_timeout"]
    assert rs[0].latency_ms == pytest.approx(1012.5)
