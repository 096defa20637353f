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
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise errors.unsupported_media_type(content_type)


def parse_values(body: bytes, *, max_values: int, max_body_bytes: int) -> list[float]:
    """The body as a non-empty list of at most ``max_values`` finite floats, else ApiError."""
    if len(body) > max_body_bytes:
        raise errors.body_too_large(len(body), max_body_bytes)
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.invalid_json(str(exc)) from None
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
            raise errors.invalid_payload(f"item {i} is {item!r}, not a number")
        value = float(item)
        if not math.isfinite(value):
            raise errors.invalid_payload(f"item {i} is not a finite number")
        values.append(value)
    return values
