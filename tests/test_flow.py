"""Our flows' declaration (flows/flow.py): parameters go to the API as the JSON
they are, and what is not plain JSON still goes through Prefect's encoder."""

from __future__ import annotations

import datetime
import subprocess
import sys

from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.sync import gitops_sync


@gitops_flow(name="probe", flow_run_name="probe")
def probe(repo: str, apps: list[str] | None = None, when: datetime.date | None = None) -> None:
    pass


def test_plain_json_parameters_are_sent_as_they_are():
    parameters = {"repo": "fleet", "apps": ["web", "db"], "when": None}
    assert probe.serialize_parameters(parameters) == parameters
    assert (gitops_sync.persist_result, gitops_sync.log_prints) == (False, False)


def test_other_parameters_still_go_through_prefects_encoder():
    assert probe.serialize_parameters({"repo": "fleet", "when": datetime.date(2026, 11, 30)}) == {
        "repo": "fleet", "when": "2026-11-30"}


def test_a_sync_run_does_not_import_fastapi():
    """The reason for the class: importing FastAPI costs each command 0.09 s."""
    code = ("import sys; from prefect_gitops.flows.sync import gitops_sync; "
            "gitops_sync.serialize_parameters({'repo': 'fleet', 'apps': None, 'dry_run': False}); "
            "print('fastapi' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
