"""Secrets encrypted in Git with SOPS and age: files made by the real `sops`
with age keys made by the real `age-keygen` (scripts/install-sops.sh), decrypted
at render time in memory, applied, and never shown or stored anywhere else."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.source import render_cache
from prefect_gitops.engine.source.render import RenderOptions, render_app
from prefect_gitops.engine.source.sops import GO_BIN, find_sops, is_encrypted
from prefect_gitops.engine.spec.appspec import App, Decryption

GITOPS = str(Path(sys.executable).parent / "gitops")
TOOLS = os.pathsep.join([os.environ.get("PATH", ""), str(GO_BIN)])

SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
stringData:
  password: {password}
data:
  token: {token}
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: {greeting}
"""


def sops_binary() -> str:
    found = find_sops()
    assert found, "sops is not installed: `make test-deps` builds it (scripts/install-sops.sh)"
    return found


def age_identity() -> tuple[str, str]:
    """A new age key pair from the real age-keygen: (key file text, public key)."""
    keygen = shutil.which("age-keygen", path=TOOLS)
    assert keygen, "age-keygen is not installed: `make test-deps` builds it (scripts/install-sops.sh)"
    private = subprocess.run([keygen], capture_output=True, text=True, check=True, timeout=30).stdout
    return private, re.search(r"^# public key: (age1\w+)$", private, re.MULTILINE).group(1)


def sops_encrypt(text: str, recipient: str) -> str:
    """The real sops, as a person runs it: only Secret values encrypted."""
    done = subprocess.run([sops_binary(), "--encrypt", "--age", recipient, "--encrypted-regex",
                           "^(data|stringData)$", "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"],
                          input=text, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout


class Plaintext:
    """A Secret's values, random so that a grep finds only them."""

    def __init__(self):
        self.password = f"pw-{secrets.token_hex(10)}"
        self.token = f"tk-{secrets.token_hex(10)}"

    def secret(self) -> str:
        return SECRET.format(password=self.password, token=base64.b64encode(self.token.encode()).decode())

    def forms(self) -> list[str]:
        """Every way the values could be written down: as given and in base64."""
        return [self.password, self.token, base64.b64encode(self.password.encode()).decode(),
                base64.b64encode(self.token.encode()).decode()]

    def found_in(self, text: str) -> list[str]:
        return [form for form in self.forms() if form in text]


def found_in_files(plain: Plaintext, directory: Path) -> list[str]:
    hits = []
    for file in directory.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            hits += [f"{file}: {form}" for form in plain.forms() if form.encode() in data]
    return hits


def vault_app(**extra) -> App:
    return App(name="vault", path="apps/vault", namespace="vault", clusters=["staging"], **extra)


WITH_KEY = {"decryption": Decryption(secret_ref="vault-age")}


@pytest.fixture
def encrypted_repo(tmp_path):
    """A repository with an app of a SOPS-encrypted Secret and a ConfigMap."""
    private, public = age_identity()
    plain = Plaintext()
    root = tmp_path / "repo"
    (root / "apps/vault").mkdir(parents=True)
    (root / "apps/vault/secret.yaml").write_text(sops_encrypt(plain.secret(), public))
    (root / "apps/vault/configmap.yaml").write_text(CONFIGMAP.format(greeting="hello"))
    return root, SecretStr(private), plain


# -- render ---------------------------------------------------------------------------

def test_an_encrypted_file_is_decrypted_in_memory_at_render_time(encrypted_repo):
    root, key, plain = encrypted_repo
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert not found_in_files(plain, root)  # the file in Git holds ciphertext only

    manifests = render_app(root, vault_app(**WITH_KEY), "staging", RenderOptions(age_key=key))

    secret = next(m for m in manifests if m.kind == "Secret")
    assert secret.obj["stringData"] == {"password": plain.password}
    assert base64.b64decode(secret.obj["data"]["token"]).decode() == plain.token
    assert "sops" not in secret.obj and secret.namespace == "vault"
    assert secret.source.path == "apps/vault/secret.yaml"
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing written


def test_an_encrypted_file_without_a_key_with_a_wrong_key_or_tampered_is_refused_with_file_and_reason(
        encrypted_repo):
    root, key, plain = encrypted_repo
    wrong = SecretStr(age_identity()[0])
    encrypted = (root / "apps/vault/secret.yaml").read_text()
    ciphertext = re.search(r"password: ENC\[AES256_GCM,data:([^,]+),", encrypted).group(1)
    flipped = ("A" if ciphertext[0] != "A" else "B") + ciphertext[1:]

    def refusal(app: App, options: RenderOptions, text: str = encrypted) -> str:
        (root / "apps/vault/secret.yaml").write_text(text)
        with pytest.raises(ProblemsFound) as refused:
            render_app(root, app, "staging", options)
        [problem] = refused.value.problems  # the ConfigMap beside it renders, but nothing is returned
        assert problem.source.path == "apps/vault/secret.yaml"
        message = str(refused.value)
        assert not plain.found_in(message) and "AGE-SECRET-KEY" not in message
        return f"{problem.rule}: {problem.message}"

    assert refusal(vault_app(), RenderOptions()).startswith("render.encrypted-without-key: ")
    assert refusal(vault_app(**WITH_KEY), RenderOptions()).startswith("render.decryption-key-missing: ")
    assert refusal(vault_app(**WITH_KEY), RenderOptions(age_key=wrong)) == (
        "render.decryption-failed: cannot decrypt: no age key of the app's secretRef can decrypt it (wrong key)")
    assert refusal(vault_app(**WITH_KEY), RenderOptions(age_key=key), encrypted.replace("name: db", "name: dbx")) == (
        "render.decryption-failed: cannot decrypt: MAC mismatch: the file was changed after it was encrypted")
    assert refusal(vault_app(**WITH_KEY), RenderOptions(age_key=key), encrypted.replace(ciphertext, flipped)) == (
        "render.decryption-failed: cannot decrypt: a value does not decrypt: the file was changed after it "
        "was encrypted")


def test_kustomize_resources_are_decrypted_after_the_build_keeping_its_changes(encrypted_repo):
    root, key, plain = encrypted_repo
    (root / "apps/vault/kustomization.yaml").write_text(
        "namespace: vault\nnamePrefix: blue-\nlabels: [{pairs: {tier: db}}]\n"
        "resources: [secret.yaml, configmap.yaml]\n")

    manifests = render_app(root, vault_app(**WITH_KEY), "staging", RenderOptions(age_key=key))

    secret = next(m for m in manifests if m.kind == "Secret")
    assert (secret.name, secret.obj["metadata"]["labels"]) == ("blue-db", {"tier": "db"})
    assert secret.obj["stringData"] == {"password": plain.password} and not is_encrypted(secret.obj)
    assert secret.source.path == "apps/vault/secret.yaml"
    with pytest.raises(ProblemsFound, match=r"apps/vault/secret.yaml.*\[render.encrypted-without-key\]"):
        render_app(root, vault_app(), "staging")


def test_an_object_still_encrypted_after_rendering_is_refused_not_applied(encrypted_repo):
    root, key, _ = encrypted_repo
    chart = root / "apps/vault"
    (chart / "templates").mkdir()
    (chart / "secret.yaml").rename(chart / "templates/secret.yaml")  # a chart's template: helm does not decrypt
    (chart / "configmap.yaml").rename(chart / "templates/configmap.yaml")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: vault\nversion: 0.1.0\n")

    with pytest.raises(ProblemsFound) as refused:
        render_app(root, vault_app(**WITH_KEY), "staging", RenderOptions(age_key=key))
    [problem] = refused.value.problems
    assert (problem.source.path, problem.object_ref, problem.rule) == (
        "apps/vault/templates/secret.yaml", "Secret/db", "render.encrypted-not-decrypted")


def test_a_decrypted_value_never_shows_in_a_validation_message(tmp_path):
    from prefect_gitops.engine.spec.policy_settings import PolicySettings
    from prefect_gitops.engine.validation.validate import validate

    private, public = age_identity()
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: pin}\nstringData:\n  pin: 90210731\n"  # not a string
    (tmp_path / "apps/vault").mkdir(parents=True)
    (tmp_path / "apps/vault/secret.yaml").write_text(sops_encrypt(secret, public))
    manifests = render_app(tmp_path, vault_app(**WITH_KEY), "staging", RenderOptions(age_key=SecretStr(private)))

    [problem] = validate(manifests, "vault", "vault", PolicySettings())
    assert problem.rule == "schema.type" and "90210731" not in problem.message, problem.message


def test_the_render_cache_keeps_nothing_of_an_app_with_decryption(encrypted_repo, tmp_path, monkeypatch):
    root, key, plain = encrypted_repo
    monkeypatch.setenv("GITOPS_HOME", str(tmp_path / "home"))
    app = vault_app(**WITH_KEY)
    manifests = render_app(root, app, "staging", RenderOptions(age_key=key))

    render_cache.store("a" * 40, app, "staging", manifests)
    render_cache.store("a" * 40, vault_app(), "staging", manifests)  # the same objects, of an app without

    assert render_cache.load("a" * 40, app, "staging") is None
    assert render_cache.load("a" * 40, vault_app(), "staging") is not None
    hits = found_in_files(plain, render_cache.cache_root())
    assert hits and all(render_cache.cache_key("a" * 40, vault_app(), "staging") in h for h in hits)


def test_gitops_secret_encrypt_encrypts_only_secret_values(tmp_path):
    private, public = age_identity()
    plain = Plaintext()
    file = tmp_path / "secret.yaml"
    file.write_text(plain.secret())

    printed = subprocess.run([GITOPS, "secret", "encrypt", str(file), "--age-recipient", public],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert file.read_text() == plain.secret()  # untouched without --in-place
    done = subprocess.run([GITOPS, "secret", "encrypt", str(file), "--age-recipient", public, "--in-place"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    encrypted = file.read_text()
    assert not plain.found_in(encrypted) and not plain.found_in(done.stdout + done.stderr + printed.stdout)
    assert "name: db" in encrypted and "password: ENC[AES256_GCM," in encrypted
    decrypted = subprocess.run([sops_binary(), "--decrypt", "--input-type", "yaml", "--output-type", "yaml",
                                str(file)], capture_output=True, text=True, timeout=60, cwd="/",
                               env={"SOPS_AGE_KEY": private, "HOME": "/nonexistent"})
    assert decrypted.returncode == 0, decrypted.stderr
    assert plain.password in decrypted.stdout
    again = subprocess.run([GITOPS, "secret", "encrypt", str(file), "--age-recipient", public, "--in-place"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already SOPS-encrypted" in again.stderr


# -- a sync to a real cluster ---------------------------------------------------------

GITOPS_YAML = """\
apps:
  - name: {app}
    path: apps/vault
    clusters: [{cluster}]
    namespace: {namespace}
    decryption: {{provider: sops, secretRef: {key_block}}}
"""


def vault_remote(tmp_path: Path, files: dict[str, str]):
    """A real Git remote holding `files`, saved as a Git repository block."""
    from prefect_gitops.blocks import GitRepository
    from example_repo import ExampleRepo, git

    bare, work = tmp_path / "vault.git", tmp_path / "work"
    work.mkdir()
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "--quiet", "-b", "main", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = ExampleRepo(bare, work, f"vault-{secrets.token_hex(3)}")
    repo.commit(files, "an encrypted Secret")
    GitRepository(url=f"file://{bare}", branch="main").save(repo.block_name, overwrite=True)
    return repo


def save_key(block: str, key_file: Path) -> None:
    from prefect.blocks.system import Secret

    Secret(value=SecretStr(key_file.read_text())).save(block, overwrite=True)


def prefect_database_dir() -> Path:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url.startswith("sqlite"), url
    return Path(url.split(":///", 1)[1]).parent


def api_post(api: str, path: str, body: dict) -> list:
    import httpx

    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.mark.cluster
def test_a_sync_applies_the_decrypted_secret_whose_values_show_nowhere_else(
        local_cluster, prefect_api, namespace, tmp_path, monkeypatch):
    from prefect_gitops.blocks import KubernetesCluster
    from conftest import kubectl
    from prefect_gitops.flows.sync import gitops_sync

    suffix = secrets.token_hex(3)
    cluster, app, key_block = f"sops-{suffix}", f"vault-{suffix}", f"vault-age-{suffix}"
    KubernetesCluster.from_kubeconfig_file(local_cluster.kubeconfig).save(cluster, overwrite=True)
    private, public = age_identity()
    keys = {"good": tmp_path / "good.agekey", "wrong": tmp_path / "wrong.agekey"}
    keys["good"].write_text(private)
    keys["wrong"].write_text(age_identity()[0])
    first, second = Plaintext(), Plaintext()
    home = tmp_path / "gitops-home"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "GITOPS_HOME": str(home)}
    said: list[str] = []  # everything the commands printed

    def gitops(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=300, env=env)
        said.append(done.stdout + done.stderr)
        return done

    def live(kind: str, name: str, path: str) -> str:
        return kubectl(local_cluster.kubeconfig, "get", kind, name, "-n", namespace, "-o",
                       f"jsonpath={{{path}}}").stdout

    assert gitops("secret", "key", key_block, "--age-key-file", str(keys["good"])).returncode == 0
    repo = vault_remote(tmp_path, {
        "gitops.yaml": GITOPS_YAML.format(app=app, cluster=cluster, namespace=namespace, key_block=key_block),
        "apps/vault/secret.yaml": sops_encrypt(first.secret(), public),
        "apps/vault/configmap.yaml": CONFIGMAP.format(greeting="hello"),
    })
    try:
        synced = gitops("-v", "sync", "--repo", repo.block_name, "--json")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        [result] = json.loads(synced.stdout)["results"]
        assert {(o["kind"], o["action"]) for o in result["objects"]} == {("Secret", "created"),
                                                                         ("ConfigMap", "created")}
        assert base64.b64decode(live("secret", "db", ".data.password")).decode() == first.password

        # A new value: the diff shows that it changes, never what it is.
        repo.commit({"apps/vault/secret.yaml": sops_encrypt(second.secret(), public)}, "rotate the password")
        diff = gitops("diff", "--repo", repo.block_name)
        assert diff.returncode == 1, diff.stdout + diff.stderr
        assert re.search(r'^\+ data\.password: "\++"$', diff.stdout, re.MULTILINE), diff.stdout
        assert gitops("sync", "--repo", repo.block_name).returncode == 0
        assert base64.b64decode(live("secret", "db", ".data.password")).decode() == second.password
        # The scheduled sync's check renders the app again (decrypting it, not from the cache): up to date.
        monkeypatch.setenv("GITOPS_HOME", str(home))
        assert gitops_sync(repo=repo.block_name, if_changed=True).results == []

        # A wrong key, then a tampered file: refused with the file and the reason, nothing applied.
        def refused_because(reason: str) -> None:
            refused = gitops("sync", "--repo", repo.block_name, "--json")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            [result] = json.loads(refused.stdout)["results"]
            assert result["status"] == "failed" and result["objects"] == []
            assert "apps/vault/secret.yaml" in result["message"] and reason in result["message"], result["message"]
            assert live("configmap", "settings", ".data.greeting") == "hello"

        encrypted = repo.read("apps/vault/secret.yaml")
        save_key(key_block, keys["wrong"])  # as `gitops secret key` does, without starting a command
        repo.commit({"apps/vault/configmap.yaml": CONFIGMAP.format(greeting="bonjour")}, "greet in French")
        refused_because("no age key of the app's secretRef can decrypt it (wrong key)")
        save_key(key_block, keys["good"])
        repo.commit({"apps/vault/secret.yaml": encrypted.replace("name: db", "name: db2")}, "tamper")
        refused_because("MAC mismatch: the file was changed after it was encrypted")
    finally:
        kubectl(local_cluster.kubeconfig, "delete", "configmap", f"gitops-app-{app}", "-n", "gitops-system",
                "--ignore-not-found", check=False)

    # Nowhere else: the commands' output and logs, the artifacts, the render cache
    # (and all of $GITOPS_HOME), and Prefect's database.
    assert not first.found_in("\n".join(said)) and not second.found_in("\n".join(said))
    artifacts = api_post(prefect_api, "/artifacts/filter", {"limit": 200, "sort": "CREATED_DESC"})
    assert any(app in (a.get("key") or "") for a in artifacts)
    assert not first.found_in(json.dumps(artifacts)) and not second.found_in(json.dumps(artifacts))
    assert (home / "git").is_dir()
    assert not found_in_files(first, home) and not found_in_files(second, home)
    database = prefect_database_dir()
    assert any(app.encode() in f.read_bytes() for f in database.iterdir() if f.is_file())  # the right files
    assert not found_in_files(first, database) and not found_in_files(second, database)
