"""Child processes (git, kustomize, helm, sops) that die with the process that
started them. A `gitops` command killed with SIGKILL runs no clean-up of its own,
so each child is started through util-linux's `setpriv --pdeathsig KILL`: the
kernel kills it when the thread that started it ends. (preexec_fn could call
prctl itself, but it is unsafe in a process with threads, and ours has many.)
The guarantee starts once setpriv has set the signal, microseconds after the start.
Every caller waits for its child in the thread that started it."""

from __future__ import annotations

import os
import shutil

_SETPRIV = shutil.which("setpriv", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/bin")


def dying_with_parent(argv: list[str]) -> list[str]:
    """argv run so that it is killed when its parent thread dies (as is where setpriv is missing)."""
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else list(argv)
