"""A run's report (engine/report.py): its JSON is `gitops sync --json`'s shape,
and Prefect's walk of what a flow returns stays out of its thousand objects."""

from __future__ import annotations

import json
from dataclasses import asdict

from prefect_gitops.engine.report import ObjectResult, SyncReport, SyncStatus, TargetResult, report_from_json


def a_result(objects: int) -> TargetResult:
    return TargetResult("web", "staging", SyncStatus.SUCCEEDED, "ok", [
        ObjectResult("v1", "ConfigMap", "web", f"c-{n}", f"web.yaml:{n}", "unchanged", "Current")
        for n in range(objects)])


def test_the_json_is_every_field_with_the_objects_as_a_list_and_reads_back():
    result = a_result(2)
    data = result.to_json()
    assert list(data) == ["app", "cluster", "status", "message", "objects", "requests", "revision", "seconds",
                          "health", "held", "suspended"]
    assert data["status"] == "succeeded" and data["objects"] == [asdict(o) for o in result.objects]
    text = SyncReport("abc", [result]).to_json()
    again = report_from_json(json.loads(text))
    assert again.results[0].objects == result.objects and again.to_json() == text


def test_prefects_walk_of_a_flows_return_value_does_not_enter_the_objects():
    from prefect.utilities.collections import visit_collection

    visited = []
    visit_collection(SyncReport("abc", [a_result(1000)]), visit_fn=visited.append, return_data=False)
    assert len(visited) < 30, len(visited)  # the report, its result and their fields; not 11,000
