"""Faults met by `gitops sync` as a user runs it (the real command, a real local
cluster of its own, a real Git remote): the kube-apiserver killed or paused
during the apply or the health wait, the command itself SIGKILLed at several
points of a 200-object apply, two syncs of one app at once. Each ends in a known,
reported state, and the next sync converges.

Each scenario prints one `fault:` line (time to fail, the bound it promises,
outcome); with GITOPS_FAULT_TABLE=FILE they are also appended to FILE as JSON
lines, which scripts/reliability.py turns into the README's table. The bounds are
worked out below from the engine's own limits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from example_repo import git
from prefect_gitops.engine.cluster.kube import UNRESPONSIVE_READ_S, KubeClient, RequestTimeout, RetryPolicy
from prefect_gitops.engine.cluster.watch import RESUME_WITHIN_S
from prefect_gitops.engine.state import lock
from prefect_gitops.engine.state.inventory import APPLYSET_PART_OF_LABEL, app_applyset_id, read_inventory
from prefect_gitops.localcluster import LocalCluster
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")
APP = "widgets"
COUNT = 200
SYNC_LIMIT_S = 300  # a subprocess timeout, far beyond any bound: a hang fails the test
SLOW_HEALTH_TIMEOUT_S = 300  # the health timeout of the app whose Deployment never becomes ready


# ---- the time to fail the engine promises, from its own limits --------------------------------

# The command's own work around a failure, which no engine limit covers: Prefect's
# state updates of the stage, app and sync runs, and the report, on 2 busy cores.
MARGIN_S = 10.0
# Requests that end a failed sync after its stage: recording the failure, the
# Lease's renewal in flight (joined), releasing the Lease.
CLEAN_UP_REQUESTS = 3


def refused_request_s() -> float:
    """A request to a server that refuses connections: its tries, back to back but for the backoff."""
    policy = RetryPolicy()
    return sum(policy.delay(retry) for retry in range(policy.attempts - 1))


def stage_retry_waits_s() -> float:
    """Prefect's waits between a stage's attempts, each at its longest jitter."""
    jitter = TRANSIENT_RETRIES["retry_jitter_factor"]
    return sum(delay * (1 + jitter) for delay in TRANSIENT_RETRIES["retry_delay_seconds"])


def refused_bound_s(noticed_within_s: float = 0.0) -> float:
    """A killed kube-apiserver (connections refused): the stage under way notices
    within `noticed_within_s` (the health wait resumes its watches for a while),
    every attempt fails after one refused request, Prefect retries the stage on
    its delays, then each clean-up request is refused."""
    attempts = 1 + TRANSIENT_RETRIES["retries"]
    return (noticed_within_s + attempts * refused_request_s() + stage_retry_waits_s()
            + CLEAN_UP_REQUESTS * refused_request_s() + MARGIN_S)


def stalled_bound_s() -> float:
    """A paused kube-apiserver (SIGSTOP: connections taken, never answered). The
    apply's requests in flight time out after the read limit; after that a request
    waits the unresponsive read limit on a pooled connection, the connect limit
    (TLS handshake) on a new one. Recording the failure then waits one such
    request; a renewal of the Lease sent before the first timeout (within one
    renewal period of the pause) may wait a full read limit, and is joined before
    the release; the release, and the cluster's next app, wait one request each.
    Stage retries play no part: a timeout is not retried."""
    limits = RequestTimeout()
    unresponsive = max(limits.connect_s, UNRESPONSIVE_READ_S)
    lease_let_go = max(limits.read_s + unresponsive, lock.RENEW_EVERY_S + limits.read_s) + unresponsive
    return lease_let_go + unresponsive + MARGIN_S


def watch_resumed_within_s() -> float:
    """How long the health wait tries to resume its watches after the server went
    away (the last try is refused too) before the stage fails."""
    return RESUME_WITHIN_S + refused_request_s()


def widgets(count: int) -> str:
    docs = [f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w-{i:03d}\ndata:\n  n: \"{i}\"\n"
            for i in range(count)]
    return "---\n".join(docs)


def spec(cluster: str) -> str:
    return (f"apps:\n  - name: {APP}\n    path: widgets\n    namespace: {APP}\n    clusters: [{cluster}]\n"
            f"    syncPolicy: {{prune: true, allowEmpty: true, healthTimeoutSeconds: 120}}\n"
            f"  - name: slow\n    path: slow\n    namespace: slow\n    clusters: [{cluster}]\n"
            f"    syncPolicy: {{prune: true, allowEmpty: true, healthTimeoutSeconds: {SLOW_HEALTH_TIMEOUT_S}}}\n")


def namespace(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"


# Paused from its creation: the controller makes no ReplicaSet, so it stays InProgress
# ("rollout paused") until the health timeout, and nothing fails fast on its own (an
# image of the fake kubelet's unreachable.invalid registry failed with ErrImagePull
# 2 s after the pod started, sometimes before the kill).
NEVER_READY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: never-ready
spec:
  paused: true
  replicas: 1
  selector: {matchLabels: {app: never-ready}}
  template:
    metadata: {labels: {app: never-ready}}
    spec:
      containers:
        - name: main
          image: nginx:1.27
          resources: {limits: {cpu: 10m, memory: 16Mi}}
"""


class Scenario:
    """The cluster, its block, the repository and its block, for one module."""

    def __init__(self, cluster: LocalCluster, root: Path, prefect_api: str):
        from prefect_gitops.blocks import GitRepository, KubernetesCluster

        self.cluster, self.prefect_api = cluster, prefect_api
        self.block = f"faults-{os.getpid()}"
        KubernetesCluster.from_kubeconfig_file(cluster.kubeconfig).save(self.block, overwrite=True)
        self.bare, self.work = root / "repo.git", root / "work"
        git("init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=root)
        self.work.mkdir()
        git("init", "--quiet", "-b", "main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.repo = f"faults-repo-{os.getpid()}"
        # The Git head that the last sync made the cluster match, when that head had
        # neither widgets nor a slow Deployment and no other sync started since.
        self.clean_head: str | None = None
        self.commit({"gitops.yaml": spec(self.block), **{f"{name}/namespace.yaml": namespace(name)
                                                         for name in (APP, "slow")}}, "start")
        GitRepository(url=f"file://{self.bare}", branch="main").save(self.repo, overwrite=True)

    def commit(self, files: dict[str, str | None], message: str) -> None:
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def holds_an_app_object(self) -> bool:
        return any((self.work / name).exists() for name in ("widgets/widgets.yaml", "slow/deployment.yaml"))

    def start_sync(self, *args: str) -> subprocess.Popen:
        """`gitops sync --json` in a process group of its own (to find what it leaves behind)."""
        self.clean_head = None
        return subprocess.Popen([GITOPS, "sync", "--repo", self.repo, "--json", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "PREFECT_API_URL": self.prefect_api, "COLUMNS": "200"})

    def sync(self, *args: str) -> tuple[int, dict, str]:
        process = self.start_sync(*args)
        out, err = process.communicate(timeout=SYNC_LIMIT_S)
        if process.returncode == 0 and not args and not self.holds_an_app_object():
            self.clean_head = self.head()
        return process.returncode, json.loads(out), err

    def kube(self) -> KubeClient:
        return KubeClient.from_kubeconfig(self.cluster.kubeconfig)

    def members_in_cluster(self, kube: KubeClient) -> set[str]:
        listed = kube.list("v1", "ConfigMap", APP, label_selector=f"{APPLYSET_PART_OF_LABEL}={app_applyset_id(APP)}")
        return {o["metadata"]["name"] for o in listed}

    def heal(self) -> bool:
        """Every component running again; whether one was not."""
        states = self.cluster.component_states()
        for component, state in states.items():
            if state == "paused":
                self.cluster.resume_component(component)
            elif state == "stopped":
                self.cluster.start_component(component)
        return set(states.values()) != {"running"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, prefect_api):
    cluster = LocalCluster(f"sync-faults-{os.getpid()}")
    cluster.up()
    try:
        yield Scenario(cluster, tmp_path_factory.mktemp("faults"), prefect_api)
    finally:
        cluster.down()


def clean(scenario: Scenario) -> Scenario:
    """The app's objects gone from Git and from the cluster, every component running.
    Already so when every component ran and the last sync, successful, was of the
    Git head without them (a test's last step): then not synced again."""
    healed = scenario.heal()
    if healed or scenario.holds_an_app_object() or scenario.clean_head != scenario.head():
        scenario.commit({"widgets/widgets.yaml": None, "slow/deployment.yaml": None}, "clean")
        code, report, err = scenario.sync()
        assert code == 0, (err, report)
    with scenario.kube() as kube:
        assert scenario.members_in_cluster(kube) == set()
    return scenario


@pytest.fixture(name="clean")
def clean_fixture(scenario) -> Scenario:
    return clean(scenario)


def record(fault: str, seconds: float | None, outcome: str, bound: float | None = None) -> None:
    """One row of the table: `bound` is the time to fail the engine promises, if the fault has one."""
    line = {"fault": fault, "seconds": None if seconds is None else round(seconds, 1),
            "bound": None if bound is None else round(bound, 1), "outcome": outcome}
    print(f"fault: {json.dumps(line)}")
    table = os.environ.get("GITOPS_FAULT_TABLE")
    if table:
        with open(table, "a") as out:
            out.write(json.dumps(line) + "\n")


def wait_for(condition, sync: subprocess.Popen, limit_s: float = 120, every_s: float = 0.02):
    """condition() once it is true; fails if the sync ended first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if sync.poll() is not None:
            out, err = sync.communicate()
            raise AssertionError(f"the sync ended first (exit {sync.returncode}): {out[-2000:]} {err[-2000:]}")
        time.sleep(every_s)
    raise AssertionError(f"not within {limit_s} s")


def left_behind(process: subprocess.Popen) -> list[str]:
    """Processes of the killed command's process group still alive, not zombies."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == process.pid and stat[0] != "Z":  # pgid, state
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return found


def result_of(report: dict, app: str = APP) -> dict:
    [result] = [r for r in report["results"] if r["app"] == app]
    return result


def outcomes(result: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in result["objects"]:
        if obj["outcome"]:
            counts[obj["outcome"]] = counts.get(obj["outcome"], 0) + 1
    return counts


@dataclass
class Ended:
    """A sync that the fault ended: its exit code, stdout, stderr, and seconds from the fault."""

    code: int
    out: str
    err: str
    failed_after: float

    @property
    def report(self) -> dict:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def api_server_killed(scenario) -> dict[str, Ended]:
    """One kill of the kube-apiserver (SIGKILL, as a crash) while two syncs are in
    progress: `--app slow` in its health wait (a Deployment that never becomes
    ready, timeout 300 s) and `--app widgets` in the middle of a 200-object apply.
    Each fails only after its stage's retries on a transient error (about 25 s),
    so the two faults share that wait. The kube-apiserver is started again and
    the never-ready Deployment removed from Git; each app's Ended."""
    clean(scenario)
    scenario.commit({"widgets/widgets.yaml": widgets(COUNT), "slow/deployment.yaml": NEVER_READY},
                    "200 widgets, and a Deployment that never becomes ready")
    slow = scenario.start_sync("--app", "slow")
    with scenario.kube() as kube:
        wait_for(lambda: kube.get("apps/v1", "Deployment", "never-ready", "slow"), slow)
        time.sleep(1)  # in the health wait now
        apply = scenario.start_sync("--app", APP)
        wait_for(lambda: scenario.members_in_cluster(kube), apply)
        wait_for(lambda: slow.poll() is None, slow)  # still in its health wait
    scenario.cluster.stop_component("kube-apiserver", kill=True)
    killed = time.monotonic()
    ended = {}

    def end(app: str, sync: subprocess.Popen) -> None:
        out, err = sync.communicate(timeout=SYNC_LIMIT_S)
        ended[app] = Ended(sync.returncode, out, err, time.monotonic() - killed)

    waiting = threading.Thread(target=end, args=("slow", slow))
    waiting.start()
    end(APP, apply)
    waiting.join()
    scenario.cluster.start_component("kube-apiserver")
    scenario.commit({"slow/deployment.yaml": None}, "no slow Deployment")
    return ended


def test_an_api_server_killed_during_the_apply_fails_the_sync_naming_the_first_error_and_each_objects_fate(
        scenario, api_server_killed):
    started = time.monotonic()
    sync = api_server_killed[APP]
    result = result_of(sync.report)
    fates = outcomes(result)
    record("kube-apiserver killed during a 200-object apply", sync.failed_after,
           f"exit {sync.code}; {', '.join(f'{n} {o}' for o, n in fates.items())}; "
           f"{result['message'].split(' is unreachable: ')[-1].split(' (of ')[0]}; next sync converges",
           bound=refused_bound_s())
    assert sync.code == 1
    assert result["status"] == "failed"
    url = scenario.cluster.record().api_url
    # The first error is the server gone (its retries may have outlived the Lease:
    # then that is said after it); the clean-up's errors are only in the log.
    assert result["message"].startswith("apply failed: ConfigMap/widgets/w-")
    assert f"cluster {scenario.block} ({url}) is unreachable: connection refused" in result["message"]
    assert f"(of {COUNT} changes: " in result["message"] and "releasing" not in result["message"]
    assert sum(fates.values()) == COUNT and fates.get("done", 0) >= 1
    assert fates.keys() <= {"done", "failed", "unknown", "not attempted"}
    assert "Traceback" not in sync.err and "Exception in thread" not in sync.err

    # The kube-apiserver runs again (api_server_killed started it).
    code, report, err = scenario.sync()
    assert code == 0, err
    with scenario.kube() as kube:
        assert len(scenario.members_in_cluster(kube)) == COUNT
    print(f"converged {time.monotonic() - started:.1f} s after the failed sync")


def test_an_api_server_killed_during_the_health_wait_fails_within_its_bound_not_at_the_health_timeout(
        api_server_killed):
    sync = api_server_killed["slow"]
    result = result_of(sync.report, "slow")
    bound = refused_bound_s(noticed_within_s=watch_resumed_within_s())
    record(f"kube-apiserver killed during the health wait (timeout {SLOW_HEALTH_TIMEOUT_S} s)", sync.failed_after,
           f"exit {sync.code}; health failed: cluster … is unreachable: "
           f"{result['message'].split(' is unreachable: ')[-1]}", bound=bound)
    assert sync.code == 1
    assert sync.failed_after <= bound < SLOW_HEALTH_TIMEOUT_S, f"failed {sync.failed_after:.1f} s after the kill"
    assert result["message"].startswith("health failed: cluster ")
    assert "is unreachable: connection refused" in result["message"]
    assert "Traceback" not in sync.err and sync.err.count("\n") < 100  # not a line per poll


def test_a_paused_api_server_fails_the_sync_within_its_bound_and_the_next_sync_converges(clean):
    scenario = clean
    scenario.commit({"widgets/widgets.yaml": widgets(COUNT)}, "200 widgets")
    sync = scenario.start_sync()
    with scenario.kube() as kube:
        wait_for(lambda: scenario.members_in_cluster(kube), sync)
    scenario.cluster.pause_component("kube-apiserver")
    paused = time.monotonic()
    out, err = sync.communicate(timeout=SYNC_LIMIT_S)
    failed_after = time.monotonic() - paused
    result = result_of(json.loads(out))
    record("kube-apiserver paused (SIGSTOP) during a 200-object apply", failed_after,
           f"exit {sync.returncode}; {', '.join(f'{n} {o}' for o, n in outcomes(result).items())}; "
           f"{result['message'].split(' is unreachable: ')[-1].split(' (of ')[0]}", bound=stalled_bound_s())
    assert sync.returncode == 1
    assert "no answer within the time limit" in result["message"]
    assert failed_after <= stalled_bound_s(), f"failed {failed_after:.1f} s after the pause"
    assert "Traceback" not in err

    scenario.cluster.resume_component("kube-apiserver")
    code, report, err = scenario.sync()
    assert code == 0, err
    with scenario.kube() as kube:
        assert len(scenario.members_in_cluster(kube)) == COUNT


@pytest.mark.parametrize("point", ["before the apply", "during the apply", "after the apply"])
def test_a_sigkilled_sync_leaves_every_object_it_created_prunable_and_no_process_behind(clean, point):
    scenario = clean
    scenario.commit({"widgets/widgets.yaml": widgets(COUNT)}, "200 widgets")
    sync = scenario.start_sync()
    with scenario.kube() as kube:
        if point == "before the apply":  # the Lease is taken: everything before the apply runs now
            wait_for(lambda: (kube.get("coordination.k8s.io/v1", "Lease", f"gitops-sync-{APP}", "gitops-system")
                              or {}).get("spec", {}).get("holderIdentity"), sync)
        elif point == "during the apply":
            wait_for(lambda: scenario.members_in_cluster(kube), sync)
        else:
            wait_for(lambda: len(scenario.members_in_cluster(kube)) == COUNT, sync)
        sync.send_signal(signal.SIGKILL)
        sync.wait()
        time.sleep(0.5)
        went_out = scenario.members_in_cluster(kube)
        assert left_behind(sync) == []
        inventory = read_inventory(kube, APP)
        known = {m.name for m in inventory.members} if inventory else set()
        assert went_out <= known  # written ahead

    scenario.commit({"widgets/widgets.yaml": None}, "the widgets removed from Git")
    started = time.monotonic()
    code, report, err = scenario.sync()
    with scenario.kube() as kube:
        remaining = scenario.members_in_cluster(kube)
    record(f"gitops sync SIGKILLed {point} (200 objects), then the objects removed from Git",
           None, f"{len(went_out)} had gone out; next sync exit {code} in {time.monotonic() - started:.1f} s, "
           f"{len(remaining)} left")
    assert code == 0, err
    assert remaining == set()
    assert "is being synced by" not in err  # the killed holder's Lease was freed at once


class StderrLines:
    """A running process's stderr, read as it comes, so that a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # the end
            self._changed.notify_all()

    def wait_for(self, text: str, limit_s: float) -> str | None:
        """The first line holding `text`, once written; None if the stream ended or limit_s passed first."""
        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._changed:
            self._changed.wait_for(lambda: found() or self.lines[-1:] == [""], timeout=limit_s)
            return found()

    def text(self) -> str:
        self._reader.join()
        return "".join(self.lines)


def lease_holder(kube: KubeClient) -> str:
    held = kube.get(lock.LEASE_API_VERSION, "Lease", lock.lease_name(APP), lock.LOCK_NAMESPACE) or {}
    return (held.get("spec") or {}).get("holderIdentity") or ""


def test_two_syncs_of_one_app_at_once_one_writes_the_other_waits_then_finds_nothing_to_do(clean):
    scenario = clean
    scenario.commit({"widgets/widgets.yaml": widgets(COUNT)}, "200 widgets")
    # Both start together, so that the one that does not get the Lease reaches it within
    # seconds: the holder, stopped meanwhile, must not stay silent for its write window.
    syncs = {process.pid: process for process in (scenario.start_sync("--app", APP), scenario.start_sync("--app", APP))}
    errs = {pid: StderrLines(process) for pid, process in syncs.items()}
    with scenario.kube() as kube:
        def holding_pid() -> int | None:
            return next((pid for pid in syncs if lease_holder(kube).endswith(f"/{pid}")), None)

        first_pid = wait_for(holding_pid, next(iter(syncs.values())))
        holder = lease_holder(kube)
    first, second = syncs[first_pid], next(p for pid, p in syncs.items() if pid != first_pid)
    first_err, second_err = errs[first.pid], errs[second.pid]
    # Stopped while it holds the Lease, the first holds it for sure while the second asks.
    os.killpg(first.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        waiting = second_err.wait_for("is being synced by", limit_s=lock.WRITE_WINDOW_S / 2)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    stopped_s = time.monotonic() - stopped
    outputs = []
    for process in (first, second):
        out = process.stdout.read()
        process.wait(timeout=SYNC_LIMIT_S)
        outputs.append(out)
    created = []
    for process, out, err in zip((first, second), outputs, (first_err, second_err)):
        assert process.returncode == 0, f"{out[-2000:]} {err.text()[-2000:]} (the holder was stopped {stopped_s:.1f} s)"
        actions = [o["action"] for o in result_of(json.loads(out))["objects"]]
        created.append(actions.count("created"))
        assert actions.count("configured") == 0
    record("two gitops sync of one app started together, the Lease's holder stopped while the other asks", None,
           f"both exit 0; objects created by the holder: {created[0]}, by the other: {created[1]}; "
           f"the other waited on the Lease: {waiting is not None}")
    said = " ".join(second_err.text().split())  # the console may wrap a long line
    assert waiting is not None and f"is being synced by {holder}" in said, said[-2000:]
    assert "is being synced by" not in first_err.text()
    assert created == [COUNT, 0]  # the first wrote them all; the second, once it held the Lease, found them there


def a_broken_copy(scenario: Scenario, fault: str, root: Path) -> str:
    """A copy of the repository, broken as `fault` says, saved as a block of its own; its name."""
    from prefect_gitops.blocks import GitRepository

    copy = root / f"{fault}.git"
    shutil.copytree(scenario.bare, copy)
    if fault == "gone":
        shutil.rmtree(copy)
    else:  # one loose object of the head commit's tree overwritten
        spec_blob = git("rev-parse", "HEAD:gitops.yaml", cwd=copy)
        loose = copy / "objects" / spec_blob[:2] / spec_blob[2:]
        assert loose.exists(), "the push left the object loose"
        loose.chmod(0o644)
        loose.write_bytes(b"not a zlib stream")
    name = f"faults-{fault}-{os.getpid()}"
    GitRepository(url=f"file://{copy}", branch="main").save(name, overwrite=True)
    return name


@pytest.mark.parametrize("fault", ["gone", "corrupt"])
def test_a_broken_git_remote_fails_the_sync_in_one_line_and_a_json_document(scenario, fault, tmp_path):
    repo = a_broken_copy(scenario, fault, tmp_path)
    started = time.monotonic()
    run = subprocess.run([GITOPS, "sync", "--repo", repo, "--json"], capture_output=True, text=True,
                         timeout=SYNC_LIMIT_S, env={**os.environ, "PREFECT_API_URL": scenario.prefect_api})
    seconds = time.monotonic() - started
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    said = lines[0].split(".git: ", 1)[-1] if lines else run.stderr
    record(f"Git remote {'gone' if fault == 'gone' else 'serving a corrupt object'}", seconds,
           f"exit {run.returncode}; error: <url>: {said[:90]}")
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr
    assert json.loads(run.stdout)["error"]["kind"] == "git"
