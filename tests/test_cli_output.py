"""The CLI's output contract: results on stdout, the rest on stderr; `gitops
diff` prints each changed object's field diff and exits as `kubectl diff` does
(0 nothing to change, 1 changes, 2 error); Secret values masked; markup and
colour never reach a pipe; Prefect's INFO lines only with -v."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from prefect_gitops.cli.diffs import print_diffs
from prefect_gitops.cli.progress import StageLines, stage_lines
from example_repo import example_repo, remove_sample_apps  # noqa: F401  (fixture)
from prefect_gitops.engine.report import ObjectResult, SyncReport, SyncStatus, TargetResult

GITOPS = str(Path(sys.executable).parent / "gitops")
ANSI = re.compile(r"\x1b\[")


def gitops(prefect_api: str, *args: str) -> subprocess.CompletedProcess:
    """The command as a user in a pipe runs it: stdout and stderr are not terminals."""
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PREFECT_API_URL": prefect_api})


def a_report() -> SyncReport:
    configured = ObjectResult("v1", "ConfigMap", "web", "web-settings", "apps/web/base/configmap.yaml:1",
                              "configured", "", diff='- data.greeting: "hello"\n+ data.greeting: "[red]hi"')
    unchanged = ObjectResult("v1", "Service", "web", "web", "apps/web/base/service.yaml:1", "unchanged", "")
    pruned = ObjectResult("v1", "ConfigMap", "web", "old", "", "pruned", "")
    return SyncReport("a" * 40, [TargetResult("web", "staging", SyncStatus.SUCCEEDED, "planned",
                                              [configured, unchanged, pruned])])


def test_diff_lines_are_coloured_on_a_terminal_only():
    plain, terminal = io.StringIO(), io.StringIO()
    assert print_diffs(Console(file=plain), a_report()) == 2
    print_diffs(Console(file=terminal, force_terminal=True, color_system="standard"), a_report())
    assert plain.getvalue().splitlines() == [
        "--- ConfigMap/web/web-settings (apps/web/base/configmap.yaml:1) web@staging",
        '- data.greeting: "hello"',
        '+ data.greeting: "[red]hi"',  # text from the cluster is never read as markup
        "--- ConfigMap/web/old web@staging",
        "- (the whole object: no longer in Git)",
    ]
    assert ANSI.search(terminal.getvalue()) and not ANSI.search(plain.getvalue())


def test_stage_lines_follow_the_task_runs_on_a_terminal_only():
    def record(task_run_name: str, message: str) -> logging.LogRecord:
        made = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, (), None)
        made.task_run_name = task_run_name
        return made

    terminal = Console(file=io.StringIO(), force_terminal=True)
    with stage_lines(terminal, shown=True):
        [lines] = [h for h in logging.getLogger("prefect.task_runs").handlers if isinstance(h, StageLines)]
        lines.handle(record("diff web@staging", "planned 3 objects"))
        lines.handle(record("render web@production", "Finished in state Completed()"))
        lines.handle(record("apply web@staging", "Finished in state Failed('boom')"))
        lines.handle(record("fetch fleet@head", "Finished in state Completed()"))  # not an app's stage
        assert lines.stages == {"web@staging": "apply Failed", "web@production": "render Completed"}
    assert not any(isinstance(h, StageLines) for h in logging.getLogger("prefect.task_runs").handlers)
    with stage_lines(Console(file=io.StringIO()), shown=True):  # not a terminal: nothing to follow
        assert not any(isinstance(h, StageLines) for h in logging.getLogger("prefect.task_runs").handlers)


def test_errors_in_a_pipe_are_plain_text_with_exit_code_2(prefect_api):
    missing = gitops(prefect_api, "diff", "--repo", "no-such-repository")
    assert missing.returncode == 2 and missing.stdout == ""
    assert re.search(r"^error: .*no-such-repository", missing.stderr, re.M), missing.stderr
    assert "[red]" not in missing.stderr and not ANSI.search(missing.stderr)
    assert "| INFO" not in missing.stderr and "Traceback" not in missing.stderr
    verbose = gitops(prefect_api, "-v", "diff", "--repo", "no-such-repository")
    assert verbose.returncode == 2 and "| INFO" in verbose.stderr
    assert json.loads(gitops(prefect_api, "diff", "--repo", "no-such-repository", "--json").stdout)["results"] == []


def test_version():
    shown = subprocess.run([GITOPS, "--version"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and re.fullmatch(r"gitops \d+\.\d+\.\d+\S*\n", shown.stdout)


SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: web-password
data:
  password: {}
"""


@pytest.mark.cluster
def test_diff_prints_field_changes_secrets_masked_and_exits_0_or_1(example_repo, registered_clusters, prefect_api):
    from prefect_gitops.flows.sync import gitops_sync

    kustomization = example_repo.read("apps/web/base/kustomization.yaml") + "  - secret.yaml\n"
    example_repo.commit({"apps/web/base/secret.yaml": SECRET.format(base64.b64encode(b"old-pw-41d7").decode()),
                         "apps/web/base/kustomization.yaml": kustomization}, "a Secret")
    try:
        assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok
        unchanged = gitops(prefect_api, "diff", "--repo", example_repo.block_name, "--cluster", "staging")
        assert unchanged.returncode == 0, unchanged.stderr
        assert unchanged.stdout == "" and "no changes" in unchanged.stderr

        example_repo.commit({
            "apps/web/base/secret.yaml": SECRET.format(base64.b64encode(b"new-pw-9c2e").decode()),
            "apps/web/base/configmap.yaml": example_repo.read("apps/web/base/configmap.yaml")
            .replace("greeting: hello", "greeting: bonjour"),
        }, "a new greeting and password")
        changed = gitops(prefect_api, "diff", "--repo", example_repo.block_name, "--cluster", "staging",
                         "--app", "web")
        assert changed.returncode == 1, changed.stderr
        lines = changed.stdout.splitlines()
        assert "--- ConfigMap/web/web-settings (apps/web/base/configmap.yaml:1) web@staging" in lines
        assert '- data.greeting: "hello"' in lines and '+ data.greeting: "bonjour"' in lines
        assert "--- Secret/web/web-password (apps/web/base/secret.yaml:1) web@staging" in lines
        assert any(re.fullmatch(r'\+ data\.password: "\++"', line) for line in lines), lines
        everything = changed.stdout + changed.stderr
        for secret in (b"old-pw-41d7", b"new-pw-9c2e"):
            assert secret.decode() not in everything and base64.b64encode(secret).decode() not in everything
        assert "1 object(s) would change" not in changed.stderr and "2 object(s) would change" in changed.stderr
        assert "| INFO" not in changed.stderr and not ANSI.search(everything)

        document = json.loads(gitops(prefect_api, "diff", "--repo", example_repo.block_name, "--cluster",
                                     "staging", "--app", "web", "--json").stdout)
        diffs = {o["name"]: o["diff"] for r in document["results"] for o in r["objects"]}
        assert diffs["web-settings"] == '- data.greeting: "hello"\n+ data.greeting: "bonjour"'
        assert "new-pw-9c2e" not in diffs["web-password"] and diffs["web"] == ""
    finally:
        remove_sample_apps(registered_clusters["staging"])
