"""Benchmark: an incremental fetch of an unchanged remote through engine.git.fetch
(fetch + resolve + reuse of the checked-out tree) against plain `git fetch` of a
mirror clone of the same remote, in the same run, over file:// and git daemon.

    .venv/bin/python bench/bench_fetch.py [--commits 300] [--files 200] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks.git_repository import GitRepository  # noqa: E402
from engine.git import fetch  # noqa: E402

ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
       "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str | Path, input: bytes | None = None) -> None:
    subprocess.run(["git", *map(str, args)], input=input, env=ENV, check=True,
                   capture_output=True, timeout=120)


def make_remote(path: Path, commits: int, files: int) -> None:
    """A bare repository with `commits` commits on main touching `files` files,
    written in one go with git fast-import."""
    git("init", "--quiet", "--bare", "-b", "main", path)
    stream = []
    for c in range(commits):
        stream.append(f"commit refs/heads/main\nmark :{c + 1}\n"
                      f"committer Bench <bench@example.com> {1_700_000_000 + c} +0000\n"
                      f"data <<EOF\ncommit {c}\nEOF\n")
        if c:
            stream.append(f"from :{c}\n")
        for f in range(files) if c == 0 else [c % files]:
            body = f"kind: ConfigMap\nmetadata:\n  name: cm-{f}\ndata:\n  rev: '{c}'\n"
            stream.append(f"M 644 inline manifests/cm-{f}.yaml\ndata {len(body)}\n{body}\n")
    git("--git-dir", path, "fast-import", "--quiet", input="".join(stream).encode())
    git("--git-dir", path, "tag", "v1", "main")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(base: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", str(base)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("git daemon did not start")


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(label: str, url: str, work: Path, rounds: int) -> None:
    repo = GitRepository(url=url)
    fetch(repo)  # the first, full fetch is not what is measured
    mirror = work / f"mirror-{label}.git"
    git("clone", "--quiet", "--mirror", url, mirror)
    ours = median_seconds(lambda: fetch(repo), rounds)
    plain = median_seconds(lambda: git("--git-dir", mirror, "fetch", "--quiet", "--prune", "origin"), rounds)
    print(f"{label:<11} engine.git.fetch {ours * 1000:7.1f} ms   git fetch {plain * 1000:7.1f} ms"
          f"   ratio {ours / plain:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        os.environ["GITOPS_HOME"] = str(work / "home")
        make_remote(work / "remote.git", args.commits, args.files)
        print(f"unchanged remote: {args.commits} commits, {args.files} files; "
              f"median of {args.rounds} incremental fetches each")
        compare("file://", f"file://{work / 'remote.git'}", work, args.rounds)
        daemon, port = start_daemon(work)
        try:
            compare("git daemon", f"git://127.0.0.1:{port}/remote.git", work, args.rounds)
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


if __name__ == "__main__":
    main()
