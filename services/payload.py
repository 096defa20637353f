"""Parsing and validation of request bodies: a JSON list of finite numbers.

Never ``ast.literal_eval`` (the original's): bodies are parsed as JSON only, and NaN/Infinity,
which Python's json module would accept, are refused.
"""

from __future__ import annotations

import json
import math

from services import errors


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def check_content_type(content_type: str | None) -> None:
    """Refuse anything but one application/json media type. Several Content-Type headers
    arrive joined by ", " (the WSGI server joins them; the ASGI app joins them the same way),
    which is never a single media type: ambiguous, so 415 in both architectures."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise errors.unsupported_media_type(content_type)


def parse_values(body: bytes, *, max_values: int, max_body_bytes: int) -> list[float]:
    """The body as a non-empty list of at most ``max_values`` finite floats, else ApiError."""
    if len(body) > max_body_bytes:
        raise errors.body_too_large(len(body), max_body_bytes)
    try:
        # Integers are read as floats: a JSON integer has no size limit, and int() refuses
        # more than 4300 digits (a ValueError, it would read as invalid JSON) while float()
        # turns 310+ digits into inf, which validation refuses with a 422.
        data = json.loads(body, parse_constant=_refuse_constant, parse_int=float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.invalid_json(str(exc)) from None
    except RecursionError:
        # Valid JSON nested deeper than the parser's recursion limit: a body the lab refuses
        # (422, as any other valid JSON that is not a list of numbers), never a 500.
        raise errors.invalid_payload(
            "expected a JSON list of numbers, got arrays or objects nested too deep"
        ) from None
    return validate_values(data, max_values=max_values)


def validate_values(data: object, *, max_values: int) -> list[float]:
    if not isinstance(data, list):
        raise errors.invalid_payload(f"expected a JSON list of numbers, got {type(data).__name__}")
    if not data:
        raise errors.invalid_payload("expected at least one number, got an empty list")
    if len(data) > max_values:
        raise errors.invalid_payload(f"expected at most {max_values} numbers, got {len(data)}")
    values = []
    for i, item in enumerate(data):
        # bool is an int subclass in Python, but `true` is not a feature value.
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise errors.invalid_payload(f"item {i} is {_describe(item)}, not a number")
        value = float(item)
        if not math.isfinite(value):
            raise errors.invalid_payload(f"item {i} is not a finite number")
        values.append(value)
    return values


def _describe(item: object) -> str:
    # A repr of a deeply nested or huge value would be costly (or recurse too deep itself).
    if isinstance(item, list | dict):
        return f"a JSON {'array' if isinstance(item, list) else 'object'}"
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."
