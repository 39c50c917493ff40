"""The age key of an app's `decryption.secretRef`: the value of Prefect's own
Secret block of that name (the contents of an age key file, one or more
`AGE-SECRET-KEY-...` lines). Loaded for each render and kept in memory only."""

from __future__ import annotations

from pydantic import SecretStr

from prefect_gitops.engine.problems import Problem, ProblemsFound
from prefect_gitops.engine.source.render import RenderOptions
from prefect_gitops.engine.spec.appspec import App


def render_options(app: App) -> RenderOptions:
    """How to render `app`: with its age key when it sets decryption. Raises
    ProblemsFound when the Secret block is missing or not a string."""
    if app.decryption is None:
        return RenderOptions()
    return RenderOptions(age_key=age_key(app))


def age_key(app: App) -> SecretStr:
    from prefect.blocks.system import Secret

    name = app.decryption.secret_ref

    def refused(message: str) -> ProblemsFound:
        return ProblemsFound([Problem(app.source, app.ref, "decryption.secret-ref", message)])

    try:
        block = Secret.load(name)
    except ValueError:
        raise refused(f"decryption.secretRef {name!r}: no Prefect Secret block of that name "
                      "(save it with `gitops secret key`)") from None
    value = block.value.get_secret_value()
    if not isinstance(value, str) or "AGE-SECRET-KEY-" not in value:
        raise refused(f"decryption.secretRef {name!r}: the Secret block holds no age key (AGE-SECRET-KEY-...)")
    return SecretStr(value)
