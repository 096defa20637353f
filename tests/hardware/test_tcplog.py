"""The sparse TCP connection records: split + attach give back every sample's tcp exactly."""

from __future__ import annotations

import copy

import pytest

from hardware import tcplog
from hardware.summary import load_samples, read_samples_csv, write_resources


def _sample(t: float, **tcp) -> dict:
    """A sample whose services have the given tcp records (None: the service has no tcp key)."""
    services = {}
    for name, record in tcp.items():
        services[name] = {"pids": [1], "cpu_user_s": t}
        if record is not None:
            services[name]["tcp"] = record
    return {"t": t, "services": services}


A, B, C, D = "127.0.0.1:1->127.0.0.1:5000", "127.0.0.1:2->127.0.0.1:5000", \
    "127.0.0.1:3->127.0.0.1:5000", "127.0.0.1:4->127.0.0.1:5000"
SERIES = [
    _sample(1.0, **{"scoring-sync": {}, "model-sync": {}, "loadgen": None}),
    _sample(2.0, **{"scoring-sync": {"10": [A, B]}, "model-sync": {}, "loadgen": None}),
    _sample(3.0, **{"scoring-sync": {"10": [A, B]}, "model-sync": {}, "loadgen": None}),
    _sample(4.0, **{"scoring-sync": {"10": [A, B, C], "11": [D]}, "model-sync": {}}),  # + C
    _sample(5.0, **{"scoring-sync": {"10": [B, C], "11": [D]}, "model-sync": {}}),  # - A
    _sample(6.0, **{"scoring-sync": {"10": [C, B], "11": [D]}}),  # reordered; model-sync gone
    _sample(7.0, **{"scoring-sync": {"11": [D]}, "model-sync": {"20": [A]}}),  # pid 10 gone
    _sample(8.0, **{"scoring-sync": None, "model-sync": {"20": [A]}}),  # no tcp key any more
    _sample(8.0, **{"scoring-sync": {"11": [D]}, "model-sync": {"20": [A]}}),  # same time
    _sample(9.0, **{"scoring-sync": {"11": [D]}, "model-sync": {"20": [A]}}),
]


def test_split_then_attach_gives_back_every_sample():
    original = copy.deepcopy(SERIES)
    bare, records = tcplog.split(SERIES)
    assert original == SERIES  # the input is not touched
    assert all("tcp" not in svc for s in bare for svc in s["services"].values())
    # A line at the first sample and at each change only (3.0 and 9.0 repeat the one before);
    # the two samples at 8.0 get one line each.
    assert [r["t"] for r in records] == [1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0]
    assert records[0]["services"] == {"scoring-sync": {}, "model-sync": {}}
    assert records[2]["services"] == {"scoring-sync": {"10": {"+": [C]}, "11": [D]}}
    assert records[3]["services"] == {"scoring-sync": {"10": {"-": [A]}}}
    assert records[4]["services"] == {"scoring-sync": {"10": [C, B]}, "model-sync": None}
    assert records[6]["services"] == {"scoring-sync": None}
    tcplog.attach(bare, records)
    assert bare == original


def test_attach_to_a_window_cut_from_the_middle():
    bare, records = tcplog.split(SERIES)
    window = copy.deepcopy(bare[4:7])  # 5.0 .. 7.0: the lines before it still count
    tcplog.attach(window, records)
    assert window == SERIES[4:7]


def test_no_tcp_anywhere_gives_no_records():
    old = [{"t": 1.0, "services": {"redis": {"pids": [1]}}}, {"t": 2.0, "services": {}}]
    bare, records = tcplog.split(old)
    assert bare == old and records == []


def test_result_folder_form_round_trip(tmp_path):
    csv_path = tmp_path / "localhost.csv"
    written = write_resources(SERIES, csv_path)
    assert written == [csv_path, tmp_path / "localhost.tcp.jsonl.gz"]
    assert "tcp" not in csv_path.read_text()
    assert len(tcplog.read(written[1])) == 8
    assert load_samples(csv_path) == sorted(SERIES, key=lambda s: s["t"])
    # Without tcp records nothing but the CSV is written.
    plain = [{"t": 1.0, "services": {"redis": {"pids": [1]}}}]
    assert write_resources(plain, tmp_path / "other.csv") == [tmp_path / "other.csv"]
    assert read_samples_csv(tmp_path / "other.csv") == plain


def test_an_old_csv_with_tcp_columns_still_loads(tmp_path):
    from hardware.summary import write_samples_csv

    write_samples_csv(SERIES, tmp_path / "old.csv")  # the form before the tcp file
    assert "tcp" in (tmp_path / "old.csv").read_text()
    loaded = load_samples(tmp_path / "old.csv")
    assert [s["services"].get("scoring-sync", {}).get("tcp") for s in loaded] == \
        [s["services"].get("scoring-sync", {}).get("tcp") for s in SERIES]


def test_a_broken_tcp_file_names_its_line(tmp_path):
    path = tmp_path / "h.tcp.jsonl"
    path.write_text('{"t": 1.0, "services": {}}\n{"t": 2.0}\n')
    with pytest.raises(ValueError, match=r"h\.tcp\.jsonl:2: not a tcp record"):
        tcplog.read(path)
