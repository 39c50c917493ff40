"""engine/cluster/kubeconfig.py against a real kube-apiserver: each way of reaching and
authenticating (token, token file, client certificate as data and as files, exec
plugins, insecure and wrong CAs, tls-server-name) is proved by a request of our
own over urllib3; and the errors name what is wrong without a secret."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import json
import socket
import sys
import threading
import warnings
from pathlib import Path

import pytest
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import prefect_gitops.engine.cluster.kubeconfig as kubeconfig
from prefect_gitops.engine.cluster.kubeconfig import (BasicAuth, ClusterAccess, KubeconfigError, load_access,
                                                      load_access_file)

needs_cluster = pytest.mark.cluster
V1 = "client.authentication.k8s.io/v1"


# ---- helpers ----------------------------------------------------------------------

def status_of(access: ClusterAccess) -> int:
    """The status of GET default namespace, sent as kube.py sends requests."""
    pool = urllib3.PoolManager(ssl_context=access.ssl_context, server_hostname=access.tls_server_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        response = pool.request("GET", f"{access.server}/api/v1/namespaces/default",
                                headers=access.auth_headers(), retries=False, timeout=10)
    return response.status


def admin_config(cluster) -> dict:
    return yaml.safe_load(cluster.kubeconfig.read_text())


def with_user(config: dict, user: dict) -> dict:
    config = copy.deepcopy(config)
    config["users"][0]["user"] = user
    return config


def with_cluster(config: dict, **changes) -> dict:
    """A copy whose cluster has `changes` (a value None removes the key)."""
    config = copy.deepcopy(config)
    cluster = config["clusters"][0]["cluster"]
    for key, value in changes.items():
        key = key.replace("_", "-")
        cluster.pop(key, None) if value is None else cluster.__setitem__(key, value)
    return config


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate(subject: x509.Name, key, issuer: x509.Name, signer, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))


def client_pair(cluster) -> tuple[bytes, bytes]:
    """A client certificate for CN tester, O system:masters, signed by the cluster's
    CA (the API server's --client-ca-file): PEM certificate and key."""
    ca_cert = x509.load_pem_x509_certificate((cluster.layout.pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((cluster.layout.pki / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tester"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")])
    return pem(certificate(subject, key, ca_cert.subject, ca_key, ca=False)), pem(key)


def other_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-cluster-ca")])
    return pem(certificate(name, key, name, key, ca=True))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plugin(tmp_path: Path, body: str, **spec) -> dict:
    """An exec spec running a Python script; the script sees `runs` (a file it may
    append to) and `info` (KUBERNETES_EXEC_INFO, parsed)."""
    script = tmp_path / "plugin.py"
    script.write_text("import json, os, sys\n"
                      f"runs = {str(tmp_path / 'runs')!r}\n"
                      "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
                      "open(runs, 'a').write('run\\n')\n" + body)
    return {"apiVersion": V1, "command": sys.executable, "args": [str(script)], "interactiveMode": "Never", **spec}


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def credential(**status) -> str:
    return json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": status})


def in_seconds(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def loopback_alias(port: int):
    """A TCP forwarder from 127.0.0.2 (an address the serving certificate does
    not name) to 127.0.0.1:port; yields its port."""
    listener = socket.create_server(("127.0.0.2", 0))

    def pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        listener.close()


# ---- against the cluster ---------------------------------------------------------------

@needs_cluster
def test_the_clusters_own_kubeconfig_works(local_cluster):
    access = load_access_file(local_cluster.kubeconfig)
    assert access.server.startswith("https://127.0.0.1:") and not access.server.endswith("/")
    assert status_of(access) == 200


@needs_cluster
def test_a_client_certificate_given_as_data_authenticates(local_cluster):
    cert, key = client_pair(local_cluster)
    config = with_user(admin_config(local_cluster), {"client-certificate-data": b64(cert), "client-key-data": b64(key)})
    access = load_access(config)
    assert access.auth_headers() == {}  # the certificate alone says who we are
    assert status_of(access) == 200


@needs_cluster
def test_client_certificate_files_resolve_against_the_kubeconfigs_directory(local_cluster, tmp_path, monkeypatch):
    cert, key = client_pair(local_cluster)
    (tmp_path / "conf" / "certs").mkdir(parents=True)
    (tmp_path / "conf" / "certs" / "tester.crt").write_bytes(cert)
    (tmp_path / "conf" / "certs" / "tester.key").write_bytes(key)
    config = with_user(admin_config(local_cluster), {"client-certificate": "certs/tester.crt", "client-key": "certs/tester.key"})
    path = tmp_path / "conf" / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    assert status_of(load_access_file(path)) == 200


@needs_cluster
def test_a_token_file_is_read_again_when_it_changes(local_cluster, tmp_path):
    config = admin_config(local_cluster)
    token_file = tmp_path / "token"
    token_file.write_text(config["users"][0]["user"]["token"] + "\n")
    access = load_access(with_user(config, {"tokenFile": str(token_file)}))
    assert status_of(access) == 200
    token_file.write_text("not-a-valid-token\n")
    assert status_of(access) == 401


@needs_cluster
def test_an_exec_plugin_giving_a_token(local_cluster, tmp_path):
    config = admin_config(local_cluster)
    token = config["users"][0]["user"]["token"]
    spec = plugin(tmp_path, f"json.dump(info, open({str(tmp_path / 'info')!r}, 'w'))\n"
                            f"assert os.environ['GREETING'] == 'hello' and not sys.stdin.isatty()\n"
                            f"print({credential(token=token)!r})\n",
                  env=[{"name": "GREETING", "value": "hello"}], provideClusterInfo=True)
    access = load_access(with_user(config, {"exec": spec}))
    assert status_of(access) == 200
    info = json.loads((tmp_path / "info").read_text())
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == access.server
    assert info["spec"]["cluster"]["certificate-authority-data"] == config["clusters"][0]["cluster"]["certificate-authority-data"]


@needs_cluster
def test_an_exec_plugin_giving_a_client_certificate(local_cluster, tmp_path):
    cert, key = client_pair(local_cluster)
    status = credential(clientCertificateData=cert.decode(), clientKeyData=key.decode())
    spec = plugin(tmp_path, f"print({status!r})\n")
    access = load_access(with_user(admin_config(local_cluster), {"exec": spec}))
    assert status_of(access) == 200


def test_an_expired_exec_credential_runs_the_plugin_again(tmp_path):
    expired = plugin(tmp_path, f"print({credential(token='t', expirationTimestamp=in_seconds(-60))!r})\n")
    access = load_access(_config({"exec": expired}))
    for _ in range(3):
        assert access.auth_headers() == {"Authorization": "Bearer t"}
    assert runs(tmp_path) == 3


def test_a_valid_exec_credential_runs_the_plugin_once_for_many_threads(tmp_path):
    valid = plugin(tmp_path, f"print({credential(token='t', expirationTimestamp=in_seconds(3600))!r})\n")
    access = load_access(_config({"exec": valid}))
    threads = [threading.Thread(target=access.auth_headers) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert access.auth_headers() == {"Authorization": "Bearer t"}
    assert runs(tmp_path) == 1


def test_a_failing_exec_plugin_names_command_exit_code_and_last_stderr_line(tmp_path):
    spec = plugin(tmp_path, "print('{\"status\": {\"token\": \"sekret-token\"}}')\n"
                            "print('first line', file=sys.stderr)\nprint('login expired', file=sys.stderr)\n"
                            "sys.exit(3)\n")
    access = load_access(_config({"exec": spec}))
    with pytest.raises(KubeconfigError) as caught:
        access.auth_headers()
    message = str(caught.value)
    assert sys.executable in message and "exit code 3" in message and message.endswith("login expired")
    assert "sekret-token" not in message and "first line" not in message


def test_an_exec_plugin_printing_no_json(tmp_path):
    spec = plugin(tmp_path, "print('sekret-token, not JSON')\n")
    with pytest.raises(KubeconfigError, match="did not print an ExecCredential") as caught:
        load_access(_config({"exec": spec})).auth_headers()
    assert "sekret-token" not in str(caught.value)


def test_an_exec_plugin_that_hangs_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(kubeconfig, "EXEC_TIMEOUT_S", 1)
    spec = plugin(tmp_path, "import time\ntime.sleep(30)\n")
    with pytest.raises(KubeconfigError, match="did not finish within 1 s"):
        load_access(_config({"exec": spec})).auth_headers()


@needs_cluster
def test_a_wrong_ca_fails_tls_and_insecure_skip_tls_verify_does_not(local_cluster):
    config = admin_config(local_cluster)
    wrong = load_access(with_cluster(config, certificate_authority_data=b64(other_ca())))
    with pytest.raises(urllib3.exceptions.SSLError):
        status_of(wrong)
    insecure = load_access(with_cluster(config, certificate_authority_data=None, insecure_skip_tls_verify=True))
    assert status_of(insecure) == 200


@needs_cluster
def test_tls_server_name_checks_the_certificate_against_another_name(local_cluster):
    config = admin_config(local_cluster)
    port = int(config["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1])
    with loopback_alias(port) as alias_port:
        # The serving certificate names localhost, kubernetes.* and 127.0.0.1, not 127.0.0.2.
        server = f"https://127.0.0.2:{alias_port}"
        with pytest.raises(urllib3.exceptions.SSLError, match="127.0.0.2"):
            status_of(load_access(with_cluster(config, server=server)))
        access = load_access(with_cluster(config, server=server, tls_server_name="kubernetes.default"))
        assert access.tls_server_name == "kubernetes.default"
        assert status_of(access) == 200


# ---- without a cluster ------------------------------------------------------------------

def _config(user: dict | None = None, **cluster) -> dict:
    return {
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "c1", "user": "u1"}}],
        "clusters": [{"name": "c1", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u1", "user": user if user is not None else {"token": "sekret-token"}}],
    }


def test_the_rest_of_the_cluster_entry_is_kept():
    access = load_access(_config(server="http://10.0.0.1:8080/prefix/", **{"proxy-url": "http://proxy:3128"}))
    assert access.server == "http://10.0.0.1:8080/prefix"
    assert access.ssl_context is None and access.proxy_url == "http://proxy:3128"


def self_signed_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tester")])
    return pem(certificate(name, key, name, key, ca=False)), pem(key)


@pytest.mark.parametrize("memfd", [True, False])
def test_a_client_key_leaves_no_file_behind(tmp_path, monkeypatch, memfd):
    if not memfd:  # the fallback: a 0600 temporary file, removed once loaded
        monkeypatch.delattr(kubeconfig.os, "memfd_create", raising=False)
    monkeypatch.setattr(kubeconfig.tempfile, "tempdir", str(tmp_path))
    cert, key = self_signed_pair()
    access = load_access(_config({"client-certificate-data": b64(cert), "client-key-data": b64(key)}))
    assert access.ssl_context is not None and list(tmp_path.iterdir()) == []


def test_a_client_key_not_matching_its_certificate():
    cert, _ = self_signed_pair()
    _, other_key = self_signed_pair()
    with pytest.raises(KubeconfigError, match="user 'u1': the client certificate and key are not a matching PEM pair"):
        load_access(_config({"client-certificate-data": b64(cert), "client-key-data": b64(other_key)}))


def test_basic_auth():
    access = load_access(_config({"username": "ann", "password": "pw"}))
    assert isinstance(access.credentials, BasicAuth)
    assert access.auth_headers() == {"Authorization": "Basic " + b64(b"ann:pw")}
    assert "pw" not in repr(access)


def test_repr_and_str_show_no_secret(tmp_path):
    for user in ({"token": "sekret-token"}, {"username": "ann", "password": "sekret-token"},
                 {"exec": plugin(tmp_path, f"print({credential(token='sekret-token')!r})\n")}):
        access = load_access(_config(user))
        access.auth_headers()
        assert "sekret-token" not in repr(access) and "sekret-token" not in str(access)


def test_an_oidc_auth_provider_sends_its_id_token():
    def part(payload: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    id_token = f"{part({'alg': 'none'})}.{part({'exp': 4102444800, 'sub': 'ann'})}.signature"
    provider = {"name": "oidc", "config": {"id-token": id_token, "client-id": "gitops",
                                           "idp-issuer-url": "https://issuer.invalid"}}
    access = load_access(_config({"auth-provider": provider}))
    assert access.auth_headers() == {"Authorization": f"Bearer {id_token}"}
    assert id_token not in repr(access)


def test_an_auth_provider_the_kubernetes_package_cannot_load_is_a_kubeconfig_error():
    access = load_access(_config({"auth-provider": {"name": "azure", "config": {"access-token": "sekret-token"}}}))
    with pytest.raises(KubeconfigError, match="auth-provider 'azure'") as caught:
        access.auth_headers()
    assert "sekret-token" not in str(caught.value)


def _without_current_context():
    config = _config()
    del config["current-context"]
    return config


def _renamed(section: str, new: str):
    config = _config()
    config[section][0]["name"] = new
    return config


@pytest.mark.parametrize("config, context, words", [
    (_without_current_context(), None, "no current-context and no context was given"),
    (_config(), "prod", "context 'prod' is not in the kubeconfig (its contexts: 'dev')"),
    (_renamed("clusters", "other"), None, "context 'dev': cluster 'c1' is not in the kubeconfig"),
    (_renamed("users", "other"), None, "context 'dev': user 'u1' is not in the kubeconfig"),
    (_config(server=""), None, "cluster 'c1' has no server"),
    (_config(**{"certificate-authority-data": "not base64!"}), None, "cluster 'c1': certificate-authority-data is not valid base64"),
    (_config(**{"certificate-authority-data": b64(b"no PEM here")}), None, "cluster 'c1': the certificate authority is not a PEM"),
    (_config({"token": "sekret-token", "client-key-data": "sekret-token!"}), None, "user 'u1': client-key-data is not valid base64"),
    (_config({"token": "sekret-token", "username": "ann", "password": "pw"}), None, "both a token and a username/password"),
    (_config({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}), None, "exec apiVersion"),
])
def test_errors_say_what_is_wrong_without_secrets(config, context, words):
    with pytest.raises(KubeconfigError) as caught:
        load_access(config, context)
    assert words in str(caught.value)
    assert "sekret-token" not in str(caught.value)


@pytest.mark.parametrize("section, key", [("cluster", "certificate-authority"), ("user", "client-certificate"),
                                          ("user", "tokenFile")])
def test_a_missing_file_is_named(tmp_path, section, key):
    config = _config({"client-key": "k.pem"} if key == "client-certificate" else None)
    config[f"{section}s"][0][section][key] = "missing.pem"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeconfigError, match=str(tmp_path / "missing.pem")):
        load_access_file(path)


def test_a_missing_kubeconfig_file_is_named(tmp_path):
    with pytest.raises(KubeconfigError, match=str(tmp_path / "nope")):
        load_access_file(tmp_path / "nope")


def test_importing_it_does_not_import_kubernetes():
    import subprocess
    out = subprocess.run([sys.executable, "-c", "import sys, prefect_gitops.engine.cluster.kubeconfig; print('kubernetes' in sys.modules)"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False"
