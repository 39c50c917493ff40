"""The README's reliability table: runs the fault scenarios of tests/test_faults.py
(the real `gitops sync` against a local cluster of its own, the kube-apiserver
killed or paused, the command SIGKILLed, two syncs at once, Git remotes broken)
and prints each fault with its time to fail and its outcome as a Markdown table.

    .venv/bin/python scripts/reliability.py

Exit code: pytest's (0 when every scenario behaved as the tests require)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["tests/test_faults.py"]


def run_scenarios(table: Path) -> int:
    env = {**os.environ, "GITOPS_FAULT_TABLE": str(table), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SCENARIOS],
                          cwd=ROOT, env=env).returncode


def markdown(rows: list[dict]) -> str:
    lines = ["| fault | time to fail | outcome |", "|---|---|---|"]
    for row in rows:
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f} s"
        lines.append(f"| {row['fault']} | {seconds} | {row['outcome']} |")
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gitops-faults-") as scratch:
        table = Path(scratch) / "faults.jsonl"
        table.touch()
        code = run_scenarios(table)
        rows = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
    print(markdown(rows))
    return code


if __name__ == "__main__":
    sys.exit(main())
