"""The rules of sync hooks (engine/changes/hooks.py), under the rule id
`object.hook`: a hook phase and delete policies we know; the delete-policy
annotation only on a hook; no PreSync hook in a Namespace the app itself
creates (on a new cluster, in a recovery, it would not exist yet). And what the
validation dry-run may not hold against a hook that is created anew."""

from __future__ import annotations

from typing import Iterator

from prefect_gitops.engine.changes.changeset import annotations_of
from prefect_gitops.engine.changes.hooks import (DELETE_POLICY_ANNOTATION, DeletePolicy, HookSpecError, Phase,
                                                 delete_policies_of, is_hook, phase_of)
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.validation.context import WARNING, Context, _effective_namespace, _problem

RULE = "object.hook"


def object_hook(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """The hook annotations' values."""
    if not is_hook(m.obj):
        if DELETE_POLICY_ANNOTATION in annotations_of(m.obj):
            yield _problem(m, RULE, f"{DELETE_POLICY_ANNOTATION} has no effect on an object that is not a hook",
                           WARNING)
        return
    for check in (phase_of, delete_policies_of):
        try:
            check(m.obj)
        except HookSpecError as error:
            yield _problem(m, RULE, str(error))


def hook_namespaces(manifests: list[Manifest], ctx: Context) -> Iterator[Problem]:
    """A PreSync hook runs before any object of the app is applied: not in a
    Namespace that the app itself defines."""
    own = {m.name for m in manifests if isinstance(m.obj, dict) and (m.group, m.kind) == ("", "Namespace")}
    for m in manifests:
        if not is_hook(m.obj) or (namespace := _effective_namespace(m, ctx)) not in own:
            continue
        try:
            pre_sync = phase_of(m.obj) is Phase.PRE_SYNC
        except HookSpecError:
            continue  # object_hook reports it
        if pre_sync:
            yield _problem(m, RULE, f"a PreSync hook runs before the app's objects are applied, so not in "
                                    f"namespace {namespace!r} that the app itself creates (it does not exist on "
                                    "a new cluster yet): define the Namespace in an app this one dependsOn")


def created_anew(m: Manifest) -> bool:
    """A hook whose earlier run's object is deleted before it is created: its
    immutable fields may change (the validation dry-run sees the earlier one)."""
    try:
        return is_hook(m.obj) and DeletePolicy.BEFORE_HOOK_CREATION in delete_policies_of(m.obj)
    except HookSpecError:
        return False
