"""Benchmark: an incremental fetch of an unchanged remote, ours (engine.source.git.fetch:
fetch + resolve + reuse of the checked-out tree) against plain `git fetch` of a
mirror clone of the same remote, in the same run, over file:// and git daemon.

Both sides are whole processes (ours: Python running engine.source.git.fetch, its
start-up and imports included - GitPython's, not Prefect's: the engine takes a
plain GitSource - and the git processes it runs; the peer: `git fetch`), compared by
wall time and CPU (user+sys, children included), each ratio git ÷ ours. Both
are warm: ours fetched the repository into its GITOPS_HOME once before (a
temporary one of the benchmark's, bench/homes.py), git has its mirror clone.
No target: the figures are for reading. Ours inside a running process (the
fetch stage of a gitops command, after its imports) is printed too, not compared.

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from compare import Row, table  # noqa: E402
from homes import own_homes  # noqa: E402
from measure import Run, run_measured  # noqa: E402

from prefect_gitops.engine.source.git import GitSource, fetch  # noqa: E402


def clean_env() -> dict[str, str]:
    """This process's environment (the benchmark's homes) without Git's settings of the user."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str | Path, input: bytes | None = None) -> None:
    subprocess.run(["git", *map(str, args)], input=input, env=clean_env(), check=True,
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
                            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("git daemon did not start")


def median_run(argv: list[str], rounds: int) -> Run:
    runs = []
    for _ in range(rounds):
        run = run_measured(argv, env=clean_env())
        if run.exit_code != 0:
            raise SystemExit(f"{argv[0]} exited {run.exit_code}:\n{run.stderr[-2000:]}")
        runs.append(run)
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def in_process_ms(repo: GitSource, rounds: int) -> float:
    """ours inside this process (imports done): the median, in ms."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fetch(repo)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def compare(label: str, url: str, work: Path, rounds: int) -> Row:
    repo = GitSource(url=url)
    fetch(repo)  # the first, full fetch is not what is measured
    mirror = work / f"mirror-{label.replace('/', '').replace(' ', '-')}.git"
    git("clone", "--quiet", "--mirror", url, mirror)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from prefect_gitops.engine.source.git import GitSource, fetch\n"
            f"fetch(GitSource(url={url!r}))")
    ours = median_run([sys.executable, "-c", code], rounds)
    plain = median_run(["git", "--git-dir", str(mirror), "fetch", "--quiet", "--prune", "origin"], rounds)
    print(f"{label:<11} ours inside a running process (not compared): {in_process_ms(repo, rounds):7.1f} ms")
    return Row(f"fetch, {label}", ours, plain, "git fetch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp, own_homes(Path(tmp), local_clusters=False):
        work = Path(tmp)
        make_remote(work / "remote.git", args.commits, args.files)
        print(f"unchanged remote: {args.commits} commits, {args.files} files; median of {args.rounds} incremental "
              "fetches each; ours against git fetch, whole processes, both warm")
        rows = [compare("file://", f"file://{work / 'remote.git'}", work, args.rounds)]
        daemon, port = start_daemon(work)
        try:
            rows.append(compare("git daemon", f"git://127.0.0.1:{port}/remote.git", work, args.rounds))
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
