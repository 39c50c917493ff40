"""A test session's own state: GITOPS_HOME (Git mirrors, render cache, the
digests of objects found valid, local clusters, the kept Prefect server),
PREFECT_HOME (Prefect's profiles and client state) and kubectl's discovery cache
live in a temporary folder, so that no run sees what an earlier run, older code
or the user left there. Only the local-cluster binary is shared with the user's
GITOPS_HOME: it is keyed on its Go sources, and building it takes minutes.

The user's own GITOPS_HOME (but its bin/) and PREFECT_HOME are fingerprinted
when the session starts and again when it ends: a session that wrote there fails.
Files of the user's own running clusters and kept Prefect server change by
themselves: there only new paths count."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.localcluster.build import share_binaries

SHARED = "bin"  # the local-cluster binaries, one per version of its sources (share_binaries)
LIVE = ("clusters", "prefect-server")  # written by the user's own running processes


def _fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root (but its shared bin/): size and mtime."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root and SHARED in dirs:
            dirs.remove(SHARED)
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue  # removed while walked
            seen[path] = (stat.st_size, stat.st_mtime_ns)
    return seen


@dataclass
class SessionHome:
    folder: Path
    user_homes: list[Path]
    before: dict[str, tuple[int, int]]

    @classmethod
    def enter(cls) -> SessionHome:
        """Point this process (and every process it starts) at a new folder."""
        user_gitops = gitops_home()
        user_prefect = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
        folder = Path(tempfile.mkdtemp(prefix="gitops-tests-"))
        share_binaries(folder / "gitops-home")
        os.environ.update(GITOPS_HOME=str(folder / "gitops-home"), PREFECT_HOME=str(folder / "prefect-home"),
                          KUBECACHEDIR=str(folder / "kube-cache"))
        for variable in ("PREFECT_API_URL", "PREFECT_PROFILE"):  # the user's server is not the tests'
            os.environ.pop(variable, None)
        homes = [user_gitops, user_prefect]
        return cls(folder, homes, cls._state(homes))

    @staticmethod
    def _state(homes: list[Path]) -> dict[str, tuple[int, int]]:
        return {path: stat for home in homes for path, stat in _fingerprint(home).items()}

    def _live(self, path: str) -> bool:
        return any(Path(path).is_relative_to(self.user_homes[0] / live) for live in LIVE)

    def leave(self, passed: bool) -> list[str]:
        """What the session wrote into the user's homes; the session's folder is
        removed when the session passed (kept for a look otherwise)."""
        after = self._state(self.user_homes)
        written = sorted(path for path, stat in after.items()
                         if path not in self.before or (self.before[path] != stat and not self._live(path)))
        written += sorted(f"{path} (removed)" for path in self.before.keys() - after.keys() if not self._live(path))
        if passed and not written:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            print(f"\nthis test session's GITOPS_HOME and PREFECT_HOME: {self.folder}")
        return written
