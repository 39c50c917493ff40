"""One error surface for every command. An expected failure - Git (a remote gone
or unreachable, wrong credentials, a corrupt object, an unknown revision, a
symlink leaving the repository), a cluster unreachable or refusing, gitops.yaml
invalid, a block missing, the Prefect API unreachable - is one line on stderr,
`error: <what and where>: <why>`, without a traceback; with `--json` the
command's one document on stdout carries it as `"error": {"kind", "message"}`.
Anything else is a bug: the same line says so, and `gitops -v` shows its
traceback. Credentials in URLs never reach the line.

Exit codes, the same scheme for every command (README, "Exit codes"): 0 all
went well, 1 the command ran and found something (changes, drift, problems, an
app that failed), 2 it could not run or could not finish checking."""

from __future__ import annotations

import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import NoReturn

import typer

from prefect_gitops.cli.console import error as print_error, is_verbose

OK, FOUND, ERROR = 0, 1, 2

_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s'\"]+@")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_GIT_REMOTE_PREFIX = re.compile(r"^(remote:\s*)+")
_MISSING_BLOCK = re.compile(r"Unable to find block document named (?P<name>\S+) for block type (?P<type>\S+)")
_BLOCK_TYPES = {"gitops-git-repository": ("Git repository", "gitops repo add"),
                "gitops-kubernetes-cluster": ("cluster", "gitops cluster add")}


@dataclass
class CommandError:
    kind: str  # git | cluster | spec | block | prefect | rollback | window | internal
    message: str  # one line
    problems: list[dict] = field(default_factory=list)  # kind spec: each problem, as validate prints them
    lines: list[str] = field(default_factory=list)  # what stderr shows, when not the message alone

    def to_json(self) -> dict:
        data = {"kind": self.kind, "message": self.message}
        return data | ({"problems": self.problems} if self.problems else {})


def fail(failure: BaseException, as_json: bool = False, document: dict | None = None,
         code: int = ERROR) -> NoReturn:
    """Report a failure the one way (see the module) and exit with `code`.
    `document`: the command's --json document as it would be without results."""
    exit_with(describe(failure), as_json, document, code, failure)


def exit_with(described: CommandError, as_json: bool = False, document: dict | None = None, code: int = ERROR,
              failure: BaseException | None = None) -> NoReturn:
    """`fail` for a failure described already (e.g. by the serve process that
    ran the command); `failure`'s traceback is shown with -v when it is a bug."""
    if as_json:
        import json

        print(json.dumps({**(document or {}), "message": described.message, "error": described.to_json()}))
    for line in described.lines or [described.message]:
        print_error(line)
    if failure is not None and described.kind == "internal" and is_verbose():
        traceback.print_exception(failure, file=sys.stderr)
    raise typer.Exit(code)


def describe(failure: BaseException) -> CommandError:
    """The failure as the user reads it. An expected error wrapped in another
    (e.g. a RuntimeError saying how long it waited) keeps the wrapper's words."""
    cause = expected_cause(failure)
    if cause is None:
        return CommandError("internal", _scrub(f"{type(failure).__name__}: {one_line(str(failure))} "
                                               "(unexpected: `gitops -v ...` shows the traceback)"))
    described = _describe_expected(cause)
    if cause is not failure:
        described.message = _scrub(one_line(str(failure)))
    return described


def is_expected(failure: BaseException) -> bool:
    return expected_cause(failure) is not None


def expected_cause(failure: BaseException) -> BaseException | None:
    """The first expected error among the failure and its explicit causes
    (`raise ... from`); not its context: a bug raised while handling an
    expected error is still a bug."""
    seen = set()
    while failure is not None and id(failure) not in seen:
        seen.add(id(failure))
        if _kind(failure):
            return failure
        failure = failure.__cause__
    return None


def _kind(failure: BaseException) -> str | None:
    # Looked up in sys.modules: a module not yet imported raised nothing, and
    # logs.py asks this of every traceback without importing the engine.
    for module, name, kind in _EXPECTED:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(failure, cls):
            return kind
    if isinstance(failure, ValueError) and _MISSING_BLOCK.search(str(failure)):
        return "block"
    return None


_EXPECTED = [
    ("prefect_gitops.engine.source.git", "GitError", "git"),
    ("prefect_gitops.engine.cluster.kube", "ClusterUnreachable", "cluster"),
    ("prefect_gitops.engine.cluster.kube", "ApiError", "cluster"),
    ("prefect_gitops.engine.problems", "ProblemsFound", "spec"),
    ("prefect_gitops.engine.source.rollback", "RollbackError", "rollback"),
    ("prefect_gitops.flows.window_gate", "SyncWindowClosed", "window"),
    ("prefect_gitops.cli.local_server", "LocalServerError", "prefect"),
    ("httpx", "ConnectError", "prefect"),
    ("prefect.exceptions", "PrefectHTTPStatusError", "prefect"),
]


def _describe_expected(failure: BaseException) -> CommandError:
    kind = _kind(failure)
    if kind == "git":
        return CommandError(kind, _scrub(git_line(str(failure))))
    if kind == "spec":
        return _spec_error(failure)
    if kind == "block":
        return CommandError(kind, _missing_block(str(failure)))
    if kind == "prefect" and type(failure).__name__ == "ConnectError":
        return CommandError(kind, _scrub(f"the Prefect API{_api_url(failure)} is unreachable: "
                                         f"{one_line(str(failure))}"))
    return CommandError(kind, _scrub(one_line(str(failure))))


def _spec_error(found) -> CommandError:
    """gitops.yaml (or the selection) is wrong: a line per problem, each with
    its file:line and rule."""
    from prefect_gitops.engine.problems import Severity

    errors = [p for p in found.problems if p.severity is Severity.ERROR]
    message = f"invalid desired state: {errors[0] if errors else found}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    lines = [f"invalid desired state: {p}" for p in errors]
    return CommandError("spec", _scrub(message), [problem_json(p) for p in found.problems], lines)


def problem_json(p) -> dict:
    return {"source": str(p.source), "object": p.object_ref, "rule": p.rule,
            "severity": p.severity.value, "message": p.message}


def git_line(text: str) -> str:
    """prefect_gitops.engine.source.git's message is `<url>: <what>: <failure>` and then git's last
    stderr lines: the first line, and git's most telling reason in brackets
    (a corrupt object, else its first fatal line, else its last line)."""
    head, *detail = _CONTROL.sub("", text).splitlines() or [""]
    detail = [line for line in (_GIT_REMOTE_PREFIX.sub("", line.strip()) for line in detail) if line]
    if not detail:
        return head
    i = next((i for hint in _GIT_TELLING for i, line in enumerate(detail) if hint in line), len(detail) - 1)
    why = _GIT_LEVEL.sub("", detail[i])
    if why.endswith(":") and i + 1 < len(detail):  # `unable to connect to HOST:` and the reason below
        why = f"{why} {detail[i + 1]}"
    return f"{head} ({why})"


_GIT_TELLING = ("is corrupt", "fatal:")
_GIT_LEVEL = re.compile(r"^(fatal|error):\s*")


def _api_url(failure) -> str:
    try:
        url = failure.request.url
    except RuntimeError:  # httpx: no request attached
        return ""
    return f" ({url.scheme}://{url.netloc.decode()})"


def _missing_block(text: str) -> str:
    match = _MISSING_BLOCK.search(text)
    what, command = _BLOCK_TYPES.get(match["type"], (match["type"], ""))
    hint = f" (save one with `{command}`)" if command else ""
    return f"no {what} block named {match['name']!r}{hint}"


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in _CONTROL.sub("", text).splitlines() if line.strip())


def _scrub(text: str) -> str:
    return _URL_CREDENTIALS.sub("", text)
