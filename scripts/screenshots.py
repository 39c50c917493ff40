"""Screenshots of Prefect's UI for the docs, taken on what `gitops demo` starts:
Prefect's own server, two local clusters, a Git remote made from examples/ and
the blocks; then a sync of the fleet and a change that fails on health and
reverts. Headless Chromium, driven through the DevTools protocol, waits until
each page has rendered what it should show, then writes a PNG:

    docs/ui-sync-run.png       the sync run: its graph of nested app runs and its logs
    docs/ui-app-runs.png       the same run's Subflow Runs tab: one run per app and cluster
    docs/ui-diff-artifact.png  the diff artifact of the change that was reverted

    .venv/bin/python scripts/screenshots.py [--out docs] [--no-revert]

Everything runs under a temporary GITOPS_HOME and PREFECT_HOME (the local
cluster binary is linked from the usual cache, built there first if missing) and
is stopped at the end, even on error. Needs Debian's `chromium`; not part of `make test`."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

os.environ.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
os.environ.pop("PREFECT_API_URL", None)  # always a fresh server of our own: only these runs on the pages

from prefect_gitops.cli import demo  # noqa: E402
from prefect_gitops.localcluster import build  # noqa: E402

WIDTH, HEIGHT = 1400, 900
PAGE_TIMEOUT_S = 90
DIFF_KEY = "gitops-diff-web-staging"
SETTLE_S = 3  # after the awaited text shows: the run graph's canvas draws in animation frames
INSTALL_HINT = ("headless Chromium is needed and none was found on PATH; on Debian or Ubuntu, as root:\n"
                "    apt-get update && apt-get install -y chromium")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    parser.add_argument("--no-revert", dest="revert", action="store_false",
                        help="skip the failing change (the diff then comes from the first sync)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still runs the clean-up below
    chromium = find_chromium()
    build.ensure_binary(on_progress=lambda m: demo.console.print(f"  localcluster build: {m}"))
    with contextlib.ExitStack() as cleanup:  # closes in reverse: browser, clusters, server, temp dir
        workdir = Path(tempfile.mkdtemp(prefix="gitops-screenshots-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        private_homes(workdir)
        api_url = cleanup.enter_context(demo.prefect_server(workdir))
        clusters = demo.start_clusters(cleanup, keep=False)
        repo = demo.make_repository(workdir)
        demo.register_blocks(repo, clusters)
        demo.first_sync()
        if args.revert:
            demo.failing_change(repo, clusters["staging"])
        browser = cleanup.enter_context(headless_chromium(chromium, workdir))
        args.out.mkdir(parents=True, exist_ok=True)
        for page in pages(api_url, args.revert):
            path = args.out / page.file
            browser.screenshot(page, path)
            demo.console.print(f"  {path} ({path.stat().st_size // 1024} KB): {page.url}")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit(INSTALL_HINT)


def private_homes(workdir: Path) -> None:
    """GITOPS_HOME and PREFECT_HOME of our own, so that the tests others run are
    not disturbed; the cluster binaries are the cached ones, linked, not rebuilt."""
    home = workdir / "gitops"
    build.share_binaries(home)
    os.environ.update(GITOPS_HOME=str(home), PREFECT_HOME=str(workdir / "prefect-client"))


# -- what to show ----------------------------------------------------------------------


@dataclass
class Page:
    file: str
    url: str
    awaited: str  # a text the page shows once it has rendered
    scroll_to: str | None = None  # the text of an element to bring to the top first


def pages(api_url: str, reverted: bool) -> list[Page]:
    """What to show, found through the REST API."""
    ui = api_url.removesuffix("/api") + "/v2"
    first, *later = _post(api_url, "flow_runs/filter", {"flows": {"name": {"any_": ["gitops-sync"]}},
                                                         "sort": "START_TIME_ASC", "limit": 10})
    app_runs = _post(api_url, "flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [first["id"]]}},
                                                    "sort": "NAME_ASC", "limit": 50})
    if not app_runs:
        raise SystemExit(f"the sync run {first['name']} has no nested app runs")
    diff_run = later[-1] if reverted and later else first
    artifact = _diff_artifact(api_url, diff_run["id"])
    return [
        Page("ui-sync-run.png", f"{ui}/runs/flow-run/{first['id']}", first["name"]),
        Page("ui-app-runs.png", f"{ui}/runs/flow-run/{first['id']}?tab=SubflowRuns", app_runs[-1]["name"],
             scroll_to="Subflow Runs"),
        Page("ui-diff-artifact.png", f"{ui}/artifacts/artifact/{artifact['id']}", "Diff: app"),
    ]


def _diff_artifact(api_url: str, sync_run_id: str) -> dict:
    """The web app's diff on staging written under that sync run (by one of its nested app runs)."""
    children = _post(api_url, "flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [sync_run_id]}},
                                                    "limit": 50})
    found = _post(api_url, "artifacts/filter", {
        "artifacts": {"key": {"any_": [DIFF_KEY]}, "flow_run_id": {"any_": [c["id"] for c in children]}},
        "sort": "CREATED_DESC", "limit": 1})
    if not found:
        raise SystemExit(f"no artifact {DIFF_KEY} was written by the sync run {sync_run_id}")
    return found[0]


def _post(api_url: str, path: str, body: dict) -> list[dict]:
    return demo._http_json(f"{api_url}/{path}", body)


# -- the browser -----------------------------------------------------------------------


class Browser:
    """One tab of headless Chromium over the DevTools protocol."""

    def __init__(self, websocket):
        self._ws = websocket
        self._next_id = 0
        self._call("Emulation.setDeviceMetricsOverride",
                   width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def screenshot(self, page: Page, path: Path) -> None:
        self._call("Page.navigate", url=page.url)
        self._wait_rendered(page.url, page.awaited)
        if page.scroll_to:
            self._scroll_to(page.scroll_to)
        time.sleep(SETTLE_S)
        png = self._call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(png))

    def _wait_rendered(self, url: str, awaited: str) -> None:
        """The single page app fetches after loading: wait for the text it
        should show and for its loading skeletons to be gone."""
        check = (f"document.body.innerText.includes({json.dumps(awaited)}) && "
                 "!document.querySelector('[class*=animate-pulse], [class*=skeleton]')")
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._call("Runtime.evaluate", expression=check, returnByValue=True)["result"].get("value"):
                return
            time.sleep(0.5)
        raise SystemExit(f"{url} did not show {awaited!r} within {PAGE_TIMEOUT_S} s")

    def _scroll_to(self, text: str) -> None:
        """The innermost element with exactly this text, to the top of its scrolling container."""
        script = (f"const found = [...document.querySelectorAll('body *')].reverse()"
                  f".find(e => e.textContent.trim() === {json.dumps(text)});"
                  "if (found) found.scrollIntoView({block: 'start'}); !!found")
        if not self._call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value"):
            raise SystemExit(f"no element reads {text!r} on the page")

    def _call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})


@contextlib.contextmanager
def headless_chromium(chromium: str, workdir: Path) -> Iterator[Browser]:
    from websockets.sync.client import connect

    port = demo._free_port()
    log = open(workdir / "chromium.log", "wb")
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader",
         f"--user-data-dir={workdir / 'chromium'}", f"--window-size={WIDTH},{HEIGHT}",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        tab = _first_tab(port, process)
        with connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as websocket:
            yield Browser(websocket)
    finally:
        _stop_group(process)
        log.close()


def _first_tab(port: int, process: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chromium exited with code {process.returncode}")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                tabs = [t for t in json.loads(response.read()) if t.get("type") == "page"]
                if tabs:
                    return tabs[0]
        time.sleep(0.5)
    raise SystemExit("chromium's DevTools endpoint did not answer within 60 s")


def _stop_group(process: subprocess.Popen) -> None:
    """Chromium runs as several processes: stop its whole group (it has its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
