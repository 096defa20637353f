"""What the scoring handler does with the model's answers, shared by both architectures."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from services import errors


def model_input(values: Sequence[float], features: Sequence[float]) -> bytes:
    """The body sent to the model API: the request's values, then the entity's stored features."""
    return json.dumps([*values, *features]).encode()


def parse_prediction(status: int, body: bytes) -> float:
    """The model's prediction from its HTTP answer, or a 502 naming what was wrong."""
    if status != 200:
        raise errors.model_bad_response(f"HTTP {status}: {body[:200]!r}")
    try:
        # parse_int=float: a huge integer becomes inf (refused below), not an OverflowError;
        # RecursionError: an answer nested too deep. Both are a bad answer (502), never a 500.
        detail = json.loads(body, parse_int=float)["detail"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise errors.model_bad_response(f"no numeric 'detail' in {body[:200]!r}") from None
    if isinstance(detail, bool) or not isinstance(detail, float) or not math.isfinite(detail):
        raise errors.model_bad_response(f"'detail' is {str(detail)[:80]}, not a finite number")
    return detail


def mean_prediction(predictions: Sequence[float]) -> dict[str, float]:
    """The scoring handler's answer: ``{"detail": mean}``, the original's shape."""
    return {"detail": sum(predictions) / len(predictions)}
