"""Health rules written in CEL for kinds without a built-in rule (custom resources),
as Flux's `healthCheckExprs`: `healthChecks` in gitops.yaml (engine/spec/health_checks.py)
give, per apiVersion and kind, CEL expressions `inProgress`, `failed` and `current`
evaluated on the live object.

The order is Flux's (RFC 0009): compute_health() has already answered Terminating
and InProgress for an object whose observedGeneration lags its generation; then
`inProgress`, `failed`, `current`, the first true one decides; none true is
InProgress. Where Flux waits until its timeout and reports an evaluation error,
this module says what the object lacks:

- each top-level field of the object is a variable (as in Flux), and `metadata`,
  `spec` and `status` are always bound ({} when absent), so `has(status.conditions)`
  is false, not an error, before a controller writes any status;
- an expression that reads a field the object lacks (or an index past a list's
  end) is not true, and the next one is tried; if none holds, the object is
  InProgress naming the missing field;
- any other evaluation error (a type error, a result that is not a bool) cannot
  fix itself: the object is Failed at once, naming the expression.

The library is `common-expression-language` (module `cel`, the Rust cel-interpreter
crate), with cel-go's strings, sets and encoders extensions as Flux has them
(its Python stdlib). It is imported when the first rule is compiled, and each
expression is compiled once per process (an LRU cache), never per object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from prefect_gitops.engine.health.rules import Health, HealthStatus
from prefect_gitops.engine.objects import group_of

if TYPE_CHECKING:
    import cel

REASON = "CELHealthCheck"
ERROR_REASON = "CELHealthCheckError"
# Always variables, {} when the object has none: has() works below them at once.
ALWAYS_BOUND = ("metadata", "spec", "status")
# cel-go's extension libraries that Flux enables (ext.Strings, ext.Sets, ext.Encoders).
EXTENSIONS = ["strings", "sets", "encoders"]
# The functions of the CEL specification that the library implements natively
# (the macros has, all, exists, exists_one, map and filter are not functions).
NATIVE_FUNCTIONS = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "timestamp", "duration", "dyn", "type",
    "contains", "startsWith", "endsWith", "matches",
    "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
_FUNCTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # not an operator such as _==_ or @in
# The library's parse error: "ERROR: <input>:LINE:COLUMN: what", then the expression and a caret.
_PARSE_ERROR = re.compile(r"<input>:(\d+):(\d+): (.*)")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")


class CelExpressionError(ValueError):
    """An expression that cannot be used: a syntax error or an unknown function."""


class HealthCheckSpec(Protocol):
    """What engine/spec/health_checks.py's HealthCheck gives (kept apart: spec imports this)."""

    api_version: str
    kind: str
    in_progress: str | None
    failed: str | None
    current: str


def check_expression(expression: str) -> None:
    """Raises CelExpressionError for a syntax error or a function the library does not know."""
    program = _program(expression)
    unknown = sorted(f for f in program.functions() if _FUNCTION_NAME.fullmatch(f) and f not in known_functions())
    if unknown:
        raise CelExpressionError(f"unknown function {', '.join(map(repr, unknown))}")


@lru_cache(maxsize=1)
def known_functions() -> frozenset[str]:
    """Native ones and those of EXTENSIONS (a namespaced one, sets.contains, is
    referenced by its last part)."""
    from cel.stdlib import EXTENSIONS as LIBRARIES

    return NATIVE_FUNCTIONS | {name.rsplit(".", 1)[-1] for lib in EXTENSIONS for name in LIBRARIES[lib]}


@lru_cache(maxsize=1024)
def _program(expression: str) -> "cel.Program":
    import cel

    try:
        return cel.compile(expression)
    except ValueError as error:
        raise CelExpressionError(_parse_error(str(error))) from None


def _parse_error(message: str) -> str:
    found = _PARSE_ERROR.search(message)
    if found is None:
        return f"syntax error: {message.splitlines()[0]}"
    line, column, what = found.groups()
    where = f"column {column}" if line == "1" else f"line {line}, column {column}"
    return f"syntax error at {where}: {what.removeprefix('Syntax error: ')}"


@lru_cache(maxsize=1)
def _functions() -> dict[str, Any]:
    """The extension functions, registered once and copied into each object's context."""
    import cel
    from cel.stdlib import add_stdlib_to_context

    context = cel.Context()
    add_stdlib_to_context(context, EXTENSIONS)
    return context.functions


@dataclass(frozen=True)
class _Expression:
    field: str  # as in gitops.yaml: inProgress, failed, current
    status: HealthStatus  # what the object is when the expression is true
    source: str
    program: "cel.Program"


class _Rule:
    """One kind's expressions, compiled, in the order they are tried."""

    def __init__(self, check: HealthCheckSpec):
        self.expressions = [
            _Expression(field, status, source, _program(source))
            for field, status, source in (("inProgress", HealthStatus.IN_PROGRESS, check.in_progress),
                                          ("failed", HealthStatus.FAILED, check.failed),
                                          ("current", HealthStatus.CURRENT, check.current))
            if source
        ]

    def judge(self, obj: dict) -> Health:
        import cel

        context = cel.Context(_variables(obj), _functions())
        missing: dict[str, list[str]] = {}  # what the object lacks: the expressions that read it
        for expression in self.expressions:
            try:
                result = expression.program.execute(context)
            except Exception as error:
                if (lacking := _missing(error)) is not None:  # a field or list item the object lacks (yet)
                    missing.setdefault(lacking, []).append(expression.field)
                    continue
                return Health(HealthStatus.FAILED, ERROR_REASON,
                              f"{expression.field} cannot be evaluated: {_first_sentence(error)}")
            if not isinstance(result, bool):
                # The type only: a value could be a Secret's.
                return Health(HealthStatus.FAILED, ERROR_REASON,
                              f"{expression.field} gave a {type(result).__name__}, not true or false")
            if result:
                return Health(expression.status, REASON, f"{expression.field}: {expression.source}")
        if missing:
            return Health(HealthStatus.IN_PROGRESS, REASON, _grouped(missing))
        return Health(HealthStatus.IN_PROGRESS, REASON,
                      f"none of {', '.join(e.field for e in self.expressions)} is true")


def _grouped(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(fields)}: {lacking}" for lacking, fields in missing.items())


def _variables(obj: dict) -> dict:
    return {**{name: {} for name in ALWAYS_BOUND}, **{k: v for k, v in obj.items() if v is not None}}


def _missing(error: Exception) -> str | None:
    """What the object lacks, when that is why the expression failed; else None."""
    if isinstance(error, KeyError):
        return f"the object has no field {error.args[0]!r}"
    if isinstance(error, IndexError):
        return f"{_first_sentence(error)} (the list is shorter)"
    # A top-level field the object lacks (functions are checked at validation).
    undefined = _UNDEFINED.match(str(error)) if isinstance(error, RuntimeError) else None
    return f"the object has no field {undefined.group(1)!r}" if undefined else None


def _first_sentence(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.split(". ")[0].rstrip(".")


class CelHealthChecks:
    """The CEL rules in effect for an app, by group and kind (the apiVersion's
    version is ignored, as in Flux: a rule for example.com/v1 also judges v1beta1).
    Called with a live object, the rule's Health, or None for a kind it has no rule for."""

    def __init__(self, checks: Iterable[HealthCheckSpec] = ()):
        self._rules = {(group_of(c.api_version), c.kind): _Rule(c) for c in checks}

    def covers(self, api_version: str, kind: str) -> bool:
        return (group_of(api_version), kind) in self._rules

    def __call__(self, obj: dict) -> Health | None:
        rule = self._rules.get((group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))))
        return rule.judge(obj) if rule is not None else None

    def __bool__(self) -> bool:
        return bool(self._rules)
