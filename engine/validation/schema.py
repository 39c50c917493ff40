"""Schema rules: built-in kinds against the schemas bundled with
kubernetes-validate, custom resources against the openAPIV3Schema of a CRD in
the same set."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jsonschema
from kubernetes_validate import utils as kv
from packaging.version import Version
from referencing import Registry, Resource

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.engine.objects import Manifest, Source, json_path
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.validation.context import WARNING, Context, _problem
from prefect_gitops.engine.validation.json_values import _describe_value, _dicts

# kubernetes_validate.validate() reads its 1.8 MB definitions file and builds a new
# registry and validator on every call. The schemas are the same; here they are
# loaded once per Kubernetes version and one validator is kept per kind.

_DEFS_ID = "https://kubernetes.io/api/_definitions.json"
# Checked, with better messages, by the structure rules; not reported twice.
_CHECKED_BY_STRUCTURE = {("metadata", key) for key in ("name", "namespace", "labels", "annotations")}


@dataclass(frozen=True)
class BuiltinSchemas:
    registry: Registry
    # (group, version, kind) -> name of its definition under $defs
    definitions: dict[tuple[str, str, str], str]
    groups: frozenset[str]

    def versions_of(self, group: str, kind: str) -> list[str]:
        return sorted(v for g, v, k in self.definitions if g == group and k == kind)


@functools.cache
def _schema_dir(kubernetes_version: str) -> tuple[str, Problem | None]:
    """The strict schema directory for the newest bundled version not newer than the
    cluster's; the newest one (and a warning) for a cluster newer than all of them."""
    wanted = Version(kv.major_minor(kubernetes_version.lstrip("v")))
    bundled = sorted({Version(v) for v in kv.all_versions()})
    usable = [v for v in bundled if v <= wanted]
    problem = None
    if not usable:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version} or older")
    if usable[-1] < Version(f"{wanted.major}.{wanted.minor}"):
        problem = Problem(Source("<schemas>"), "", "schema.version-unsupported",
                          f"no schemas for Kubernetes {kubernetes_version}; validated against {usable[-1]}",
                          WARNING)
    return f"v{usable[-1]}-local-strict", problem


@functools.cache
def builtin_schemas(schema_dir: str) -> BuiltinSchemas:
    """The bundled definitions of one Kubernetes version, parsed and crawled once."""
    contents = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", schema_dir)
    registry = (Resource.from_contents(contents) @ Registry()).crawl()
    definitions, groups = {}, set()
    for name, schema in contents["$defs"].items():
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        groups.update(gvk["group"] for gvk in gvks)
        if len(gvks) == 1:  # several: DeleteOptions, WatchEvent and the like, never applied
            gvk = gvks[0]
            definitions[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return BuiltinSchemas(registry, definitions, frozenset(groups))


@functools.cache
def builtin_validator(schema_dir: str, group: str, version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """One validator per (Kubernetes version, apiVersion, kind), reused for every object."""
    schemas = builtin_schemas(schema_dir)
    name = schemas.definitions.get((group, version, kind))
    if name is None:
        return None
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"{_DEFS_ID}#/$defs/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=schemas.registry)


def schema_object(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Built-in kinds against the bundled schemas, custom resources against a CRD in
    the same set; other custom resources are left to the server dry-run."""
    if not m.kind or not isinstance(m.obj.get("apiVersion"), str) or not isinstance(m.obj.get("kind"), str):
        return  # structure rules report it
    version = m.api_version.rpartition("/")[2]
    validator = builtin_validator(ctx.schema_dir, m.group, version, m.kind)
    seen = _ValidBuiltins.key(ctx.schema_dir, m) if validator is not None else None
    if seen is not None and seen in _valid_builtins:
        return
    if validator is None:
        validator = ctx.crd_validators.get((m.group, version, m.kind))
    if validator is None:
        yield from _unknown_builtin(m, ctx, version)
        return
    errors = list(validator.iter_errors(m.obj))
    if not errors and seen is not None:
        _valid_builtins.add(seen)
    for error in errors:
        if tuple(error.absolute_path)[:2] in _CHECKED_BY_STRUCTURE:
            continue
        for path, rule, message in _describe(error):
            text = f"{json_path(path)}: {message}" if path else message
            yield _problem(m, rule, scrub(text, [m.obj]))  # a Secret's values (decrypted ones too) never shown


class _ValidBuiltins:
    """Objects of built-in kinds found valid, by digest, kept in $GITOPS_HOME so
    that a command validates only objects it has not seen valid before (a sync of
    1,000 unchanged objects skips 1,000 schema checks), as a long-lived process
    (`gitops serve`) does in memory. The schemas of a Kubernetes version never
    change; the digest covers the object and the schema set. Bounded; Secrets are
    never kept, not even as a digest. New digests are appended by flush()."""

    LIMIT = 100_000
    DIGEST = 16

    def __init__(self) -> None:
        self._known: set[bytes] | None = None
        self._new: list[bytes] = []

    @classmethod
    def key(cls, schema_dir: str, m: Manifest) -> bytes | None:
        if m.kind == "Secret":
            return None
        text = json.dumps([schema_dir, m.obj], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.blake2b(_judge() + text.encode(), digest_size=cls.DIGEST).digest()

    def __contains__(self, key: bytes) -> bool:
        return key in self._loaded()

    def add(self, key: bytes) -> None:
        known = self._loaded()
        if len(known) >= self.LIMIT:
            known.clear()
        known.add(key)
        self._new.append(key)

    def flush(self) -> None:
        """Append the digests found valid since the last flush (one write: appends
        of other processes do not interleave within it); start over past LIMIT."""
        new, self._new = b"".join(self._new), []
        if not new:
            return
        path = self._path()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size >= self.LIMIT * self.DIGEST:
                    os.ftruncate(fd, 0)
                os.write(fd, new)
            finally:
                os.close(fd)
        except OSError:
            pass  # only a cache: the next command validates these objects again

    def _loaded(self) -> set[bytes]:
        if self._known is None:
            try:
                data = self._path().read_bytes()
            except OSError:
                data = b""
            self._known = {data[i:i + self.DIGEST] for i in range(0, len(data) - self.DIGEST + 1, self.DIGEST)}
        return self._known

    @staticmethod
    def _path() -> Path:
        return gitops_home() / "valid-objects"


@functools.cache
def _judge() -> bytes:
    """What judged an object valid: the source of the validation rules and the
    versions of the libraries they use. A digest kept by other code (an older
    install, another checkout sharing $GITOPS_HOME) is then never a match."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    for package in ("kubernetes-validate", "jsonschema", "referencing"):
        digest.update(f"{package}={importlib.metadata.version(package)};".encode())
    return digest.digest()


_valid_builtins = _ValidBuiltins()


def remember_valid() -> None:
    """Keep the digests of the objects found valid since the last call ($GITOPS_HOME)."""
    _valid_builtins.flush()


def _unknown_builtin(m: Manifest, ctx: Context, version: str) -> Iterator[Problem]:
    """A kind of a built-in group that this Kubernetes version does not serve."""
    schemas = builtin_schemas(ctx.schema_dir)
    if m.group not in schemas.groups or (m.group, m.kind) in ctx.crds:
        return
    k8s = kv.major_minor(ctx.schema_dir.split("-")[0].lstrip("v"))
    if others := schemas.versions_of(m.group, m.kind):
        served = ", ".join(f"{m.group}/{v}" if m.group else v for v in others)
        yield _problem(m, "schema.unknown-api-version",
                       f"Kubernetes {k8s} does not serve {m.kind} as {m.api_version}; it does as {served}")
    else:
        yield _problem(m, "schema.unknown-kind",
                       f"Kubernetes {k8s} has no kind {m.kind} in API group {m.group or 'core'!r}")


def _describe(error: jsonschema.ValidationError) -> Iterator[tuple[list, str, str]]:
    """(path, rule, message) for one schema error, in words a person can act on."""
    path, instance, schema = list(error.absolute_path), error.instance, error.schema
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        for key in instance:
            if key not in known and not any(re.search(p, key) for p in patterns):
                yield path + [key], "schema.unknown-field", "unknown field"
    elif error.validator == "required":
        for key in error.validator_value:
            if key not in instance:
                yield path + [key], "schema.required", "required field missing"
    elif error.validator == "type":
        yield path, "schema.type", f"expected {_types(error.validator_value)}, got {_describe_value(instance)}"
    elif error.validator in ("oneOf", "anyOf"):
        if instance is None:
            return  # null is valid under both arms of int-or-string and quantity
        options = [s.get("type") for s in error.validator_value if isinstance(s, dict)]
        if all(options) and all(set(s) <= {"type"} for s in error.validator_value):
            wanted = " or ".join(_types(t) for t in options)
            yield path, "schema.type", f"expected {wanted}, got {_describe_value(instance)}"
        else:
            yield path, "schema.invalid", error.message
    elif error.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in error.validator_value if v is not None)
        yield path, "schema.enum", f"must be one of {allowed}, got {_describe_value(instance)}"
    else:
        yield path, "schema.invalid", error.message


def _types(value: str | list[str]) -> str:
    types = [value] if isinstance(value, str) else [t for t in value if t != "null"]
    return " or ".join(types)


# --- schema of custom resources from CRDs in the same set ----------------------------


def _crd_validators(
    crds: dict[tuple[str, str], Manifest],
) -> dict[tuple[str, str, str], jsonschema.protocols.Validator]:
    validators = {}
    for (group, kind), crd in crds.items():
        for version in _dicts(crd.obj["spec"].get("versions")):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                continue
            json_schema = structural_to_json_schema(schema, root=True)
            try:
                jsonschema.Draft202012Validator.check_schema(json_schema)
            except jsonschema.SchemaError:
                continue  # a broken CRD schema: the CRD's own checks and the server report it
            validators[(group, str(version.get("name")), kind)] = jsonschema.Draft202012Validator(json_schema)
    return validators


_PLAIN_KEYWORDS = (
    "type", "required", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "multipleOf",
)
_EMBEDDED = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


def structural_to_json_schema(s: dict, root: bool = False) -> dict:
    """A CRD's structural OpenAPI v3 schema as JSON Schema, with unknown fields
    rejected as the server does with fieldValidation=Strict. Null is allowed
    everywhere because the server prunes nulls of non-nullable fields."""
    out: dict[str, Any] = {k: s[k] for k in _PLAIN_KEYWORDS if k in s}
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for bound, key in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if s.get(key) is True and bound in out:  # OpenAPI 3.0 booleans, JSON Schema numbers
            out[key] = out.pop(bound)
    if s.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string", "null"]
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            out[key] = [structural_to_json_schema(sub) for sub in s[key]]
    if "not" in s:
        out["not"] = structural_to_json_schema(s["not"])
    if isinstance(s.get("items"), dict):
        out["items"] = structural_to_json_schema(s["items"])
    properties = {k: structural_to_json_schema(v) for k, v in (s.get("properties") or {}).items()}
    if root or s.get("x-kubernetes-embedded-resource"):
        properties = {**_EMBEDDED, **properties}
    if properties:
        out["properties"] = properties
    additional = s.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = structural_to_json_schema(additional)
    elif additional is not None:
        out["additionalProperties"] = additional
    elif properties and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out
