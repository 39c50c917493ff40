"""How every flow of ours is declared: `@gitops_flow(name=..., flow_run_name=...)`,
a Prefect flow that keeps no result (a run's report is its state and artifact)
and does not capture print().

Its parameters (repository, app and cluster names, flags) are JSON as they are,
and are sent to the API unchanged. Prefect's own Flow passes every parameter
through FastAPI's jsonable_encoder, and importing FastAPI for that costs each
`gitops` command 0.09 s; anything that is not plain JSON still goes that way."""

from __future__ import annotations

from typing import Any, Callable

from prefect import Flow


class GitopsFlow(Flow):
    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if all(_is_json(value) for value in parameters.values()):
            return dict(parameters)
        return super().serialize_parameters(parameters)


def gitops_flow(*, name: str, flow_run_name: str | Callable[[], str]) -> Callable[[Callable], GitopsFlow]:
    return lambda fn: GitopsFlow(fn, name=name, flow_run_name=flow_run_name, persist_result=False,
                                 log_prints=False)


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(map(_is_json, value))
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json(item) for key, item in value.items())
    return False
