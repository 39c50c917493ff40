"""Which Prefect API a command talks to, decided before anything imports
Prefect (importing it costs 2-3 s), and plain REST reads of it for the commands
that only list things.

The API is, in this order:
1. PREFECT_API_URL from the environment;
2. the one of Prefect's settings when Prefect is already imported in this
   process (a test harness, a program calling the CLI in-process);
3. PREFECT_API_URL of the active Prefect profile ($PREFECT_HOME/profiles.toml);
4. the local server kept in $GITOPS_HOME (cli/local_server.py), started first
   when it is not running. Prefect's temporary server is never used.

Prefect's settings files in the working directory (prefect.toml, .env,
pyproject.toml's [tool.prefect]) are only read by Prefect itself: when one is
there, steps 3-4 defer to Prefect's own settings instead."""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import typer

from prefect_gitops.cli.console import err, error, is_verbose
from prefect_gitops.cli.local_server import LocalPrefectServer, LocalServerError

# The settings a REST client needs besides the URL, as Prefect names them.
AUTH_STRING, API_KEY = "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY"
CERT_FILE, SKIP_VERIFY = "PREFECT_API_SSL_CERT_FILE", "PREFECT_API_TLS_INSECURE_SKIP_VERIFY"
TIMEOUT_S = 30


class PrefectApiError(RuntimeError):
    """The API did not answer, or refused: one line naming it."""


@dataclass(frozen=True)
class PrefectApi:
    url: str
    chosen_by: str  # how it was chosen, said in one line
    settings: dict[str, str] = field(default_factory=dict, repr=False)  # auth and TLS, as Prefect names them

    def describe(self) -> str:
        return f"prefect: {self.chosen_by} {self.url.removesuffix('/api')}"

    def get_json(self, path: str) -> Any:
        """GET a path of the API as JSON; urllib's HTTPError for an answer that is not 2xx."""
        request = urllib.request.Request(f"{self.url.rstrip('/')}/{path.lstrip('/')}", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._tls()) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as failed:
            reason = getattr(failed, "reason", failed)
            raise PrefectApiError(f"the Prefect API at {self.url} does not answer: {reason}") from None

    def block_documents(self, block_type_slug: str) -> list[dict]:
        """Saved blocks of one type (named, not anonymous), secrets left on the
        server (`********` where one is set), sorted by name; none when the type
        was never registered."""
        try:
            documents = self.get_json(f"block_types/slug/{block_type_slug}/block_documents?include_secrets=false")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise PrefectApiError(f"the Prefect API at {self.url} answered {error.code} {error.reason}") from None
        return sorted((d for d in documents if d.get("name") and not d.get("is_anonymous")),
                      key=lambda d: d["name"])

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.settings.get(API_KEY):
            headers["Authorization"] = f"Bearer {self.settings[API_KEY]}"
        elif self.settings.get(AUTH_STRING):
            headers["Authorization"] = "Basic " + base64.b64encode(self.settings[AUTH_STRING].encode()).decode()
        return headers

    def _tls(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        if self.settings.get(SKIP_VERIFY, "").lower() in ("1", "true", "yes"):
            return ssl._create_unverified_context()  # noqa: S323 - the user's own setting, as Prefect honours it
        return ssl.create_default_context(cafile=self.settings.get(CERT_FILE) or None)


def use_prefect_api() -> PrefectApi:
    """For a command about to talk to Prefect: choose its API and say which in
    one line on stderr, always for the local server kept in $GITOPS_HOME (a
    process that outlives the command), with -v for the others."""
    try:
        api = prefect_api(on_start=err.print)
    except LocalServerError as failed:
        error(f"{failed}\n(set PREFECT_API_URL to a Prefect server of your own, or see `gitops server start`)")
        raise typer.Exit(2)
    if api.chosen_by.endswith("local server"):
        err.print(f"{api.describe()} (`gitops server stop` ends it)", style="dim")
    elif is_verbose():
        err.print(api.describe(), style="dim")
    global _chosen
    _chosen = api
    return api


_chosen: PrefectApi | None = None


def chosen_api() -> PrefectApi | None:
    """The API use_prefect_api chose for this command, if it ran."""
    return _chosen


def prefect_api(on_start: Callable[[str], None] | None = None) -> PrefectApi:
    """The API for this command. The local server's address is exported as
    PREFECT_API_URL, so that Prefect, imported later, talks to the same one (the
    other choices are ones Prefect makes itself). `on_start` is told when the
    local server has to be started first."""
    if os.environ.get("PREFECT_API_URL"):
        return PrefectApi(os.environ["PREFECT_API_URL"], "PREFECT_API_URL", _settings(os.environ))
    if "prefect.settings" in sys.modules or _settings_files_in(Path.cwd()):
        found = _from_prefect_settings()
        if found:
            return found
    else:
        profile, values = _active_profile()
        if values.get("PREFECT_API_URL"):
            return PrefectApi(values["PREFECT_API_URL"], f"profile {profile}", _settings({**values, **os.environ}))
    api = _local_server(on_start)
    os.environ["PREFECT_API_URL"] = api.url
    return api


def _local_server(on_start: Callable[[str], None] | None) -> PrefectApi:
    server = LocalPrefectServer()
    record = server.running()
    if record:
        return PrefectApi(record.api_url, "kept local server", _settings(os.environ))
    if on_start:
        on_start(f"prefect: starting a local server in {server.home} (once; `gitops server stop` ends it)")
    record, started = server.start()
    return PrefectApi(record.api_url, "started local server" if started else "kept local server",
                      _settings(os.environ))


def _from_prefect_settings() -> PrefectApi | None:
    """Prefect's own reading of its settings (every source it has; slow when
    Prefect is not imported yet)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        return None
    values = {AUTH_STRING: api.auth_string, API_KEY: api.key, CERT_FILE: api.ssl_cert_file,
              SKIP_VERIFY: str(api.tls_insecure_skip_verify)}
    return PrefectApi(api.url, "Prefect's settings", {k: _plain(v) for k, v in values.items() if v})


def _plain(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _settings(source: dict[str, str] | os._Environ) -> dict[str, str]:
    return {name: source[name] for name in (AUTH_STRING, API_KEY, CERT_FILE, SKIP_VERIFY) if source.get(name)}


def _active_profile() -> tuple[str, dict[str, str]]:
    """The active profile's name and settings, as Prefect picks it: PREFECT_PROFILE,
    else the file's `active`."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        profiles = {}
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    values = profiles.get("profiles", {}).get(name, {})
    return name, {k: str(v) for k, v in values.items()}


def _settings_files_in(directory: Path) -> bool:
    """Whether the directory holds settings that only Prefect reads."""
    if (directory / "prefect.toml").is_file():
        return True
    for name, marker in ((".env", "PREFECT_"), ("pyproject.toml", "[tool.prefect")):
        try:
            if marker in (directory / name).read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False
