"""Which tests are slow: `make test-fast` runs ``-m "not slow"``, `make test` everything.

A test that starts a real service or deploys a lab carries ``@pytest.mark.slow`` (as do the
few that run a compiler, ansible-lint or rebuild whole committed reports). The conftest helpers
that start services or deploy call ``only_in_slow_tests`` and fail a test without the mark, so
the fast loop stays fast as tests are added. A fixture in SLOW_FIXTURES marks every test using
it. The state lives here, not in conftest.py: pytest loads conftest.py as ``conftest`` while the
tests import it as ``tests.conftest``, two modules that would each keep their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

SLOW_FIXTURES = frozenset({"experiments_lab"})  # a private deployed lab
_running: dict[str, pytest.Item] = {}


def mark_slow_fixtures(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    """While ``item`` runs (set-up, call, tear-down), it is the test the helpers check."""
    _running["item"] = item
    try:
        yield
    finally:
        _running.pop("item", None)


def only_in_slow_tests(what: str) -> None:
    """Fail the running test unless it is marked slow (outside pytest: nothing)."""
    item = _running.get("item")
    if item is not None and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} {what}: mark it @pytest.mark.slow (make test-fast runs "
                    f"-m 'not slow')", pytrace=False)
