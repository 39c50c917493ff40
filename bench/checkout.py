"""How the benchmarks run the code of a checkout (`--root`, e.g. a `git archive`
of an older commit) rather than the installed one: a sys.path entry to put first,
and the prefix of its module names. A checkout laid out as one package gets a
folder named prefect_gitops of links to its top-level folders; an older checkout
(its folders installed as top-level packages) is its own entry."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "prefect_gitops"
FOLDERS = ("blocks", "cli", "engine", "flows", "localcluster", "tasks")


@dataclass(frozen=True)
class Checkout:
    root: Path
    path: str  # put first on sys.path (PYTHONPATH)
    prefix: str  # "prefect_gitops." or "" for a checkout from before one package

    @classmethod
    def of(cls, root: Path) -> Checkout:
        if f'"{PACKAGE}.cli"' not in (root / "pyproject.toml").read_text():
            return cls(root, str(root), "")
        links = Path(tempfile.mkdtemp(prefix="bench-checkout-")) / PACKAGE
        links.mkdir()
        for folder in FOLDERS:
            (links / folder).symlink_to(root / folder)
        return cls(root, str(links.parent), f"{PACKAGE}.")

    def entry(self) -> str:
        """Python that runs the checkout's `gitops` as bin/gitops does: cli.entry's
        main, or cli.main's app in a checkout from before it."""
        if (self.root / "cli" / "entry.py").exists():
            return f"from {self.prefix}cli.entry import main; main()"
        return f"from {self.prefix}cli.main import app; app()"
