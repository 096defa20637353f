"""The model API's run-time slowdown (services/slowdown.py): off by default, a factor read from
a file while it exists, a bad file named with its value, and the model's wait multiplied."""

from __future__ import annotations

import pytest

from services import fake_model, slowdown
from services.settings import Settings


def test_off_by_default_nothing_is_read(monkeypatch):
    def no_read(path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(slowdown, "read_factor", no_read)
    settings = Settings()
    assert settings.model_slowdown_file == ""
    assert slowdown.factor(settings) == 1.0
    assert 0.040 <= fake_model.draw_sleep(settings) <= 0.050


def test_the_factor_follows_the_file_at_most_every_read_interval(tmp_path):
    path = str(tmp_path / "slow")
    settings = Settings(model_slowdown_file=path)
    assert slowdown.factor(settings, now=100.0) == 1.0  # no file: no fault
    slowdown.write_factor(path, 3.0)
    assert slowdown.factor(settings, now=100.05) == 1.0  # cached within READ_EVERY_S
    assert slowdown.factor(settings, now=100.2) == 3.0
    (tmp_path / "slow").unlink()
    assert slowdown.factor(settings, now=100.4) == 1.0


def test_the_models_wait_is_multiplied(tmp_path):
    path = str(tmp_path / "slow")
    slowdown.write_factor(path, 3.0)
    settings = Settings(model_slowdown_file=path, sleep_min_s=0.01, sleep_max_s=0.01)
    slowdown._cache.clear()
    assert fake_model.draw_sleep(settings) == pytest.approx(0.03)


@pytest.mark.parametrize(("text", "match"), [("fast", "'fast' is not a number"),
                                             ("0.5", "0.5 is not in"), ("nan", "nan is not in")])
def test_a_bad_file_is_named_with_its_value(tmp_path, text, match):
    path = tmp_path / "slow"
    path.write_text(text)
    with pytest.raises(slowdown.SlowdownError, match=match) as info:
        slowdown.read_factor(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(slowdown.SlowdownError):
        slowdown.write_factor(str(path), 0.5)
