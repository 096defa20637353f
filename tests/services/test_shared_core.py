"""The framework-free core both architectures rely on."""

import json

import pytest

from services import aggregate, errors, features, payload
from services.settings import Arch, Settings
from services.workers import worker_count


def parse(body: bytes, max_values: int = 4) -> list[float]:
    return payload.parse_values(body, max_values=max_values, max_body_bytes=8192)


def test_parses_the_seed_readme_body():
    assert parse(b"[5.1,3.5,1.4,0.2]") == [5.1, 3.5, 1.4, 0.2]
    assert parse(b"[1, 2]") == [1.0, 2.0]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[5.1,", 400, "invalid_json"),
        (b"__import__('os')", 400, "invalid_json"),  # the original literal_eval'd bodies
        (b"[NaN]", 400, "invalid_json"),
        (b"[Infinity]", 400, "invalid_json"),
        (b"[1e999]", 422, "invalid_payload"),  # overflows to inf after parsing
        (b"{}", 422, "invalid_payload"),
        (b"[]", 422, "invalid_payload"),
        (b"[1,2,3,4,5]", 422, "invalid_payload"),
        (b'["1"]', 422, "invalid_payload"),
        (b"[true]", 422, "invalid_payload"),
        (b"[[1]]", 422, "invalid_payload"),
        (b"[null]", 422, "invalid_payload"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[" + b"1," * 4200 + b"1]", 413, "body_too_large"),
        # valid JSON that breaks validation is a 422, never a 500 (issue 10)
        (b"[1" + b"0" * 400 + b"]", 422, "invalid_payload"),  # float() would overflow
        (b"[1" + b"0" * 900 + b"]", 422, "invalid_payload"),  # int() would refuse the digits
        (b"[" * 1500 + b"]" * 1500, 422, "invalid_payload"),  # RecursionError in the parser
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, 422, "invalid_payload"),
    ],
)
def test_refuses_bad_bodies_with_a_status_and_a_message(body, status, code):
    with pytest.raises(errors.ApiError) as caught:
        parse(body)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded"]
)
def test_refuses_other_content_types(content_type):
    with pytest.raises(errors.ApiError) as caught:
        payload.check_content_type(content_type)
    assert caught.value.status == 415


def test_two_content_types_joined_are_refused():
    # How the WSGI server joins repeated headers, and how the async app joins them too.
    with pytest.raises(errors.ApiError) as caught:
        payload.check_content_type("application/json, application/json")
    assert caught.value.status == 415


@pytest.mark.parametrize("body", [
    b'{"detail": 1' + b"0" * 400 + b"}", b'{"detail": ' + b"[" * 1500 + b"]" * 1500 + b"}",
])
def test_a_model_answer_that_breaks_parsing_is_a_502(body):
    with pytest.raises(errors.ApiError) as caught:
        aggregate.parse_prediction(200, body)
    assert (caught.value.status, caught.value.code) == (502, "model_bad_response")


def test_one_entity_per_request():
    assert features.one_entity([], "0") == "0"
    assert features.one_entity(["7"], "0") == "7"
    with pytest.raises(errors.ApiError) as caught:
        features.one_entity(["1", "2"], "0")
    assert caught.value.status == 422


def test_accepts_json_with_parameters():
    payload.check_content_type("application/json; charset=utf-8")
    payload.check_content_type("Application/JSON")


def test_model_input_is_values_then_features():
    assert json.loads(aggregate.model_input([1.0], [0.5, 0.25])) == [1.0, 0.5, 0.25]


def test_prediction_parsing_and_mean():
    assert aggregate.parse_prediction(200, b'{"detail": 0.045}') == 0.045
    assert aggregate.mean_prediction([0.04, 0.05]) == pytest.approx({"detail": 0.045})


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b'{"detail": 1}'), (200, b"not json"), (200, b'{"x": 1}'), (200, b'{"detail": "a"}'),
     (200, b"[1]"), (200, b'{"detail": true}')],
)
def test_bad_model_answers_are_502(status, body):
    with pytest.raises(errors.ApiError) as caught:
        aggregate.parse_prediction(status, body)
    assert caught.value.status == 502


def test_feature_vectors_are_deterministic_and_entities_checked():
    assert features.vector("7") == features.vector("7") != features.vector("8")
    assert len(features.vector("7")) == features.FEATURE_DIM
    assert features.check_entity("user-42") == "user-42"
    for bad in ["", "a b", "x" * 65, "../etc"]:
        with pytest.raises(errors.ApiError) as caught:
            features.check_entity(bad)
        assert caught.value.status == 422
    with pytest.raises(errors.ApiError) as caught:
        features.decode("9", None)
    assert caught.value.status == 404


def test_worker_counts_follow_the_original_images_on_the_pinned_cores():
    auto = Settings()
    assert worker_count(auto, Arch.SYNC, cores=1) == 2
    assert worker_count(auto, Arch.SYNC, cores=4) == 8
    assert worker_count(auto, Arch.ASYNC, cores=1) == 2
    assert worker_count(auto, Arch.ASYNC, cores=4) == 4
    assert worker_count(Settings(workers=3), Arch.ASYNC, cores=4) == 3


def test_settings_come_from_one_prefix(monkeypatch):
    monkeypatch.setenv("SCORING_LAB_SLEEP_MIN_S", "0.001")
    monkeypatch.setenv("SCORING_LAB_SLEEP_MAX_S", "0.002")
    monkeypatch.setenv("SCORING_LAB_MODEL_URL", "http://198.18.0.12:5000/")
    settings = Settings()
    assert (settings.sleep_min_s, settings.sleep_max_s) == (0.001, 0.002)
    assert settings.model_base_url(Arch.SYNC) == "http://198.18.0.12:5000"


def test_settings_refuse_an_inverted_sleep_range():
    with pytest.raises(ValueError, match="sleep_max_s"):
        Settings(sleep_min_s=0.05, sleep_max_s=0.04)


def test_seeding_is_idempotent(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    assert features.seed(client, 30) == 30
    assert features.seed(client, 30) == 0
    assert features.seed(client, 40) == 10
    assert json.loads(client.get(features.key("3"))) == features.vector("3")
    assert int(client.get(features.COUNT_KEY)) == 40
