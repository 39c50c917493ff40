"""Tables the CLI prints on stdout."""

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def print_table(table: Table) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=300)  # scripts read whole lines, not a table wrapped at 80 columns
    out.print(table)


_COLOURS = {"succeeded": "green", "skipped": "yellow"}


def print_result(console: Console, result) -> None:
    """One line per app and cluster of a sync, diff or drift report: status, where, message."""
    colour = _COLOURS.get(result.status.value, "red")
    console.print(f"[{colour}]{result.status.value}[/{colour}] {result.app} on {result.cluster}: "
                  f"{escape(result.message)}", highlight=False)
