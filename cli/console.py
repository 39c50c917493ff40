"""Where the CLI writes: results on stdout, progress and errors on stderr.
Markup is rendered (coloured on a terminal, plain text in a pipe) and never
reaches a pipe as `[red]`; text that comes from elsewhere (messages, object
names) is escaped so that its brackets are not read as markup. Lines are not
wrapped in a pipe: scripts read whole lines."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console(soft_wrap=True, highlight=False)
_verbose = False  # `gitops -v`: Prefect's lines and the tracebacks of bugs shown (cli/logs.py)


def is_verbose() -> bool:
    return _verbose


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def error(message: str, label: str = "error") -> None:
    """`error: message` on stderr, the label red on a terminal."""
    err.print(f"[red]{escape(label)}:[/red] {escape(message)}")
