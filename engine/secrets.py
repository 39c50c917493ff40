"""Secret values kept out of everything we show: diffs, reports, messages.
Each distinct value is masked by a run of `+` of a length of its own (Argo CD's
way), so a change shows and the value never does."""

from __future__ import annotations

import base64
import binascii
import copy
import json
from typing import Iterable

from prefect_gitops.engine.changes.changeset import annotations_of

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def is_secret(obj: dict | None) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


class SecretMasker:
    """Replaces each distinct Secret value by a run of `+` of a length of its own
    (Argo CD's way): a change shows, the value never does. Use one masker for all
    the versions of one object, so an unchanged value looks the same in each."""

    def __init__(self) -> None:
        self._masks: dict[bytes, str] = {}

    def _mask(self, value: bytes) -> str:
        if value not in self._masks:
            self._masks[value] = "+" * (8 + len(self._masks))
        return self._masks[value]

    def mask(self, obj: dict | None) -> dict | None:
        """A copy with every value of data, stringData and the last-applied
        annotation masked; objects other than Secrets are returned as they are."""
        if not is_secret(obj):
            return obj
        masked = copy.deepcopy(obj)
        self._mask_values(masked)
        annotations = annotations_of(masked)
        if LAST_APPLIED in annotations:
            annotations[LAST_APPLIED] = self._mask_last_applied(str(annotations[LAST_APPLIED]))
        return masked

    def _mask_values(self, obj: dict) -> None:
        for field, decode in (("data", _b64_bytes), ("stringData", _utf8_bytes)):
            values = obj.get(field)
            if isinstance(values, dict):
                obj[field] = {k: self._mask(decode(v)) for k, v in values.items()}

    def _mask_last_applied(self, text: str) -> str:
        try:
            applied = json.loads(text)
        except ValueError:
            return self._mask(text.encode())
        if not isinstance(applied, dict):
            return self._mask(text.encode())
        self._mask_values(applied)
        return json.dumps(applied, sort_keys=True)


def _b64_bytes(value: object) -> bytes:
    text = str(value)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def _utf8_bytes(value: object) -> bytes:
    return str(value).encode()


def secret_values(objs: Iterable[dict | None]) -> set[str]:
    """Every Secret value in these objects, as sent and as decoded."""
    found: set[str] = set()
    for obj in objs:
        if not is_secret(obj):
            continue
        for value in (obj.get("stringData") or {}).values():
            found.add(str(value))
        for value in (obj.get("data") or {}).values():
            found.add(str(value))
            decoded = _b64_bytes(value)
            found.add(decoded.decode(errors="replace"))
        applied = annotations_of(obj).get(LAST_APPLIED)
        if applied:
            found.add(str(applied))
    return {v for v in found if len(v) >= 3}


def scrub(text: str, objs: Iterable[dict | None]) -> str:
    """Text (an error message) with any Secret value of these objects masked."""
    for value in sorted(secret_values(objs), key=len, reverse=True):
        text = text.replace(value, "<masked>")
    return text


# ---- rendering ----------------------------------------------------------------------
