"""Start, stop and list local clusters: a real control plane of processes on
free loopback ports, with its state under $GITOPS_HOME/clusters/NAME."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.localcluster import build, pki
from prefect_gitops.localcluster.components import COMPONENTS, Layout, Ports, component_args, component_name
from prefect_gitops.localcluster.errors import LocalClusterError

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 15
# A fault need not wait long for a graceful exit: the kube-apiserver was seen to
# linger over 60 s after SIGTERM while the other components stay connected.
COMPONENT_STOP_TIMEOUT_S = 5
LOG_TAIL_LINES = 25
COMPONENT_ENV = {"GOGC": os.environ.get("LOCALCLUSTER_GOGC", "50")}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's CPU times

Progress = Callable[[str], None]


class AlreadyRunningError(LocalClusterError):
    def __init__(self, cluster: "LocalCluster"):
        super().__init__(f"local cluster {cluster.name!r} is already running; its kubeconfig: {cluster.kubeconfig}")
        self.cluster = cluster


@dataclass
class ClusterRecord:
    """What cluster.json remembers of a started cluster."""

    name: str
    api_url: str
    ports: dict
    pids: dict = field(default_factory=dict)
    started_at: float = 0.0
    extra_args: dict = field(default_factory=dict)  # per component, kept for a restart


def clusters_dir() -> Path:
    return gitops_home() / "clusters"


def list_clusters() -> list["LocalCluster"]:
    folder = clusters_dir()
    if not folder.is_dir():
        return []
    return [LocalCluster(p.name) for p in sorted(folder.iterdir()) if (p / "cluster.json").exists()]


class LocalCluster:
    def __init__(self, name: str):
        if not NAME_PATTERN.match(name):
            raise LocalClusterError(
                f"invalid cluster name {name!r}: use lowercase letters, digits and '-', at most 40 characters"
            )
        self.name = name
        self.layout = Layout(clusters_dir() / name)
        self.node_name = f"{name}-node"
        self._processes: dict[str, subprocess.Popen] = {}  # those this object started

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def record(self) -> ClusterRecord | None:
        try:
            return ClusterRecord(**json.loads(self.layout.state_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def running_pids(self) -> dict[str, int]:
        """The components of this cluster whose processes are alive."""
        record = self.record()
        if record is None:
            return {}
        return {c: pid for c, pid in record.pids.items() if _is_our_process(pid, self.layout.root)}

    def is_running(self) -> bool:
        return set(self.running_pids()) == set(COMPONENTS)

    def component_states(self) -> dict[str, str]:
        """Each component's state: "running", "paused" (SIGSTOP) or "stopped"."""
        alive = self.running_pids()
        return {c: ("paused" if _is_paused(alive[c]) else "running") if c in alive else "stopped"
                for c in COMPONENTS}

    def resident_memory_bytes(self) -> int:
        return sum(_rss_bytes(pid) for pid in self.running_pids().values())

    def component_cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + sys of all its threads, not of its children) each
        running component has used since it started: what it spent on a command
        is the difference of two calls."""
        return {c: _cpu_s(pid) for c, pid in self.running_pids().items()}

    # -- up ---------------------------------------------------------------------------

    def up(self, on_progress: Progress = lambda _: None, extra_args: dict[str, list[str]] | None = None) -> Path:
        """Start the cluster and wait until it is usable; return the kubeconfig path."""
        if self.is_running():
            raise AlreadyRunningError(self)
        if self.layout.root.exists():
            self.down()  # a leftover of a cluster that died: start clean
        binary = build.ensure_binary(on_progress=on_progress)
        self._processes = {}  # an earlier up() of this object started others
        self._prepare()
        ports = _free_ports(5)
        record = ClusterRecord(
            name=self.name,
            api_url=f"https://127.0.0.1:{ports[2]}",
            ports=asdict(Ports(*ports)),
            started_at=time.time(),
            extra_args=extra_args or {},
        )
        try:
            self._start_all(binary, Ports(*ports), record, on_progress)
        except BaseException:
            # Stop what started but keep the logs for a post-mortem; the next
            # `up` or a `down` removes them.
            self._stop_processes()
            raise
        return self.kubeconfig

    def _prepare(self) -> None:
        layout = self.layout
        layout.logs.mkdir(parents=True, exist_ok=True)
        layout.root.chmod(0o700)
        pki.write_pki(layout.pki)
        self._tokens = {
            "admin": ("localcluster-admin", ["system:masters"]),
            "controller-manager": ("system:kube-controller-manager", []),
            "scheduler": ("system:kube-scheduler", []),
            "kubelet": (f"system:node:{self.node_name}", ["system:nodes"]),
        }
        self._token_values = {who: secrets.token_urlsafe(32) for who in self._tokens}
        lines = []
        for who, (user, groups) in self._tokens.items():
            lines.append(f'{self._token_values[who]},{user},{user},"{",".join(groups)}"')
        layout.tokens.write_text("\n".join(lines) + "\n")
        layout.tokens.chmod(0o600)

    def _start_all(self, binary: Path, ports: Ports, record: ClusterRecord, on_progress: Progress) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        api = _ApiClient(record.api_url, self.layout.pki / "ca.crt", self._token_values["admin"])
        self._write_kubeconfigs(record.api_url)

        def start(component: str) -> None:
            self._spawn_recorded(binary, component, record)

        on_progress("starting etcd")
        start("etcd")
        self._wait("etcd to be healthy", deadline,
                   lambda: _etcd_healthy(ports.etcd_client))
        on_progress("starting kube-apiserver")
        start("apiserver")
        self._wait("kube-apiserver /readyz", deadline, lambda: api.get_text("/readyz") == "ok")
        on_progress("starting kube-controller-manager, kube-scheduler and the kubelet")
        for component in ("controller-manager", "scheduler", "kubelet"):
            start(component)
        self._wait(f"node {self.node_name} to be Ready", deadline,
                   lambda: _node_ready(api.get_json(f"/api/v1/nodes/{self.node_name}")))
        self._wait("the default service account", deadline,
                   lambda: api.get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None)

    def _spawn_recorded(self, binary: Path, component: str, record: ClusterRecord) -> None:
        """Start a component with the flags and ports of the record, and record its pid."""
        args = (component_args(component, self.layout, Ports(**record.ports), self.node_name)
                + record.extra_args.get(component, []))
        record.pids[component] = self._spawn(binary, component, args)
        self.layout.state_file.write_text(json.dumps(asdict(record), indent=2))

    def _spawn(self, binary: Path, component: str, args: list[str]) -> int:
        log = open(self.layout.log(component), "ab")
        self._processes[component] = process = subprocess.Popen(
            [str(binary), component, *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.layout.root,
            env={**os.environ, **COMPONENT_ENV},
            start_new_session=True,  # outlives `gitops localcluster up`; no terminal signals
        )
        log.close()
        return process.pid

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        while True:
            for component, process in self._processes.items():
                # poll(), not /proc: right after the spawn a process may still be in
                # exec, with an empty command line.
                if process.poll() is not None:
                    raise LocalClusterError(
                        f"{component} of local cluster {self.name!r} {self._exit_status(component)} "
                        f"while waiting for {what}; "
                        f"last lines of {self.layout.log(component)}:\n{self.log_tail(component)}"
                    )
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"local cluster {self.name!r}: timed out after {START_TIMEOUT_S} s waiting for {what}; "
                    f"logs are in {self.layout.logs}"
                )
            time.sleep(0.2)

    def _exit_status(self, component: str) -> str:
        code = self._processes[component].poll()
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self, component: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.layout.log(component).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    def _write_kubeconfigs(self, api_url: str) -> None:
        ca = (self.layout.pki / "ca.crt").read_bytes()
        for who in self._tokens:
            path = self.kubeconfig if who == "admin" else self.layout.component_kubeconfig(who)
            path.write_text(yaml.safe_dump(_kubeconfig(self.name, api_url, ca, self._token_values[who])))
            path.chmod(0o600)

    # -- down -------------------------------------------------------------------------

    def down(self) -> bool:
        """Stop every process of the cluster and remove its state. False if there was none."""
        if not self.layout.root.exists():
            return False
        self._stop_processes()
        shutil.rmtree(self.layout.root, ignore_errors=True)
        return True

    # -- faults: one component at a time, its state kept ---------------------------------

    def stop_component(self, component: str, kill: bool = False) -> None:
        """Stop one component (SIGTERM, then SIGKILL after 5 s; with `kill`, SIGKILL at
        once, as a crash): its data, ports and flags are kept for start_component."""
        component, pid = self._alive(component)
        self._processes.pop(component, None)
        _stop(pid, self.layout.root, 0 if kill else COMPONENT_STOP_TIMEOUT_S)

    def pause_component(self, component: str) -> None:
        """Freeze one component (SIGSTOP): its sockets stay open and the kernel
        still accepts connections, but nothing answers them."""
        component, pid = self._alive(component)
        os.kill(pid, signal.SIGSTOP)
        # The signal is delivered asynchronously: say "paused" only once it is.
        deadline = time.monotonic() + 5
        while not _is_paused(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume_component(self, component: str) -> None:
        """Let a paused component run on (SIGCONT)."""
        component, pid = self._alive(component)
        os.kill(pid, signal.SIGCONT)

    def start_component(self, component: str, on_progress: Progress = lambda _: None) -> None:
        """Start a stopped component again with the same flags, ports and state
        (the kube-apiserver on the same URL: kubeconfigs keep working); after etcd
        or the kube-apiserver, wait until they are healthy and the kube-apiserver
        ready again."""
        component = component_name(component)
        record = self.record()
        if record is None:
            raise LocalClusterError(f"local cluster {self.name!r} does not exist")
        if component in self.running_pids():
            raise LocalClusterError(f"{component} of local cluster {self.name!r} is already running")
        binary = build.ensure_binary(on_progress=on_progress)
        self._processes = {}  # watch only the one started now
        on_progress(f"starting {component}")
        self._spawn_recorded(binary, component, record)
        deadline = time.monotonic() + START_TIMEOUT_S
        if component == "etcd":
            self._wait("etcd to be healthy", deadline, lambda: _etcd_healthy(record.ports["etcd_client"]))
        if component in ("etcd", "apiserver") and self.component_states()["apiserver"] == "running":
            # After etcd too: the kube-apiserver answers 5xx until it has reconnected.
            api = _ApiClient(record.api_url, self.layout.pki / "ca.crt", self._admin_token())
            self._wait("kube-apiserver /readyz", deadline, lambda: api.get_text("/readyz") == "ok")

    def _alive(self, component: str) -> tuple[str, int]:
        component = component_name(component)
        pid = self.running_pids().get(component)
        if pid is None:
            raise LocalClusterError(f"{component} of local cluster {self.name!r} is not running")
        return component, pid

    def _admin_token(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return config["users"][0]["user"]["token"]

    def _stop_processes(self) -> None:
        record = self.record()
        pids = record.pids if record else {}
        for component in reversed(COMPONENTS):
            if component in pids:
                _stop(pids[component], self.layout.root)


class _ApiClient:
    """Just enough of an HTTPS client to wait for the API server, without
    importing the kubernetes package (which costs a second)."""

    def __init__(self, url: str, ca_file: Path, token: str):
        self.url = url
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def get_text(self, path: str) -> str | None:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=5) as response:
                return response.read().decode()
        except urllib.error.HTTPError:
            return None

    def get_json(self, path: str) -> dict | None:
        text = self.get_text(path)
        return json.loads(text) if text else None


def _kubeconfig(name: str, api_url: str, ca: bytes, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": api_url, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
    }


def _etcd_healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        return json.loads(response.read()).get("health") == "true"


def _node_ready(node: dict | None) -> bool:
    if not node:
        return False
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports. Held open together so none repeats."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _is_our_process(pid: int, state_dir: Path) -> bool:
    """True if pid is alive and is a component of the cluster in state_dir (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False  # exited; its parent has yet to collect the status
    return str(state_dir) in cmdline


def _is_paused(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def _stop(pid: int, state_dir: Path, grace_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if the process is still there after grace_s (0: SIGKILL at once)."""
    if not _is_our_process(pid, state_dir):
        return
    if grace_s > 0:
        os.kill(pid, signal.SIGTERM)
        # A paused process would keep the SIGTERM pending until the SIGKILL; sent
        # after it (as systemd does), SIGCONT lets it handle the SIGTERM at once.
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while _is_our_process(pid, state_dir):
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        time.sleep(0.05)
    _reap(pid)


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
