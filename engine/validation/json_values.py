"""JSON values and their types, as problem messages name them (their paths: engine.objects.json_path)."""

from __future__ import annotations

import json
from typing import Any


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe_value(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return _json_type(value)
    text = json.dumps(value)
    return f"{_json_type(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _missing_or_type(value: Any, wanted: str = "non-empty string") -> str:
    return "is missing" if value in (None, "") else f"must be a {wanted}, got {_json_type(value)}"
