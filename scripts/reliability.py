"""The README's reliability table: runs the fault scenarios of tests/test_faults.py
(the real `gitops sync` against a local cluster of its own, the kube-apiserver
killed or paused, the command SIGKILLed, two syncs at once, Git remotes broken)
and prints each fault with its time to fail, the time to fail the engine promises
for it (worked out in tests/test_faults.py from the engine's own limits) and its
outcome as a Markdown table.

    .venv/bin/python scripts/reliability.py [PYTEST_ARGS...]   # e.g. -k paused

The table is printed only when every scenario passed: otherwise the failed tests
are named and there is no table. Exit code: 0 when every scenario passed and each
time to fail is within its bound; 1 when a bound was missed (each such row is
named); pytest's own (non-zero) when a scenario failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["tests/test_faults.py"]
MISSED_A_BOUND = 1


def run_scenarios(table: Path, junit: Path, pytest_args: list[str]) -> int:
    env = {**os.environ, "GITOPS_FAULT_TABLE": str(table), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               *SCENARIOS, *pytest_args]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def failed_tests(junit: Path) -> list[str]:
    """The tests that failed or errored, as pytest's JUnit report names them."""
    if not junit.exists():
        return []
    return [f"{case.get('classname')}::{case.get('name')}" for case in ElementTree.parse(junit).iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None]


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def markdown(rows: list[dict]) -> str:
    lines = ["| fault | time to fail | bound | outcome |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['fault']} | {seconds(row['seconds'])} | {seconds(row.get('bound'))} | {row['outcome']} |")
    return "\n".join(lines)


def missed_bounds(rows: list[dict]) -> list[dict]:
    """Rows whose fault has a bound and took longer, or whose time was not measured."""
    return [row for row in rows if row.get("bound") is not None
            and (row["seconds"] is None or row["seconds"] > row["bound"])]


def main(pytest_args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="gitops-faults-") as scratch:
        table, junit = Path(scratch) / "faults.jsonl", Path(scratch) / "junit.xml"
        table.touch()
        code = run_scenarios(table, junit, pytest_args)
        failed = failed_tests(junit)
        rows = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
    if code != 0:
        print(f"\nno table: pytest exited {code}", file=sys.stderr)
        for name in failed:
            print(f"failed: {name}", file=sys.stderr)
        return code
    print(markdown(rows))
    missed = missed_bounds(rows)
    for row in missed:
        print(f"missed its bound: {row['fault']}: {seconds(row['seconds'])} > {seconds(row['bound'])}",
              file=sys.stderr)
    return MISSED_A_BOUND if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
