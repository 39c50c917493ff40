"""SOPS-encrypted manifests (Flux's format: age recipients, a top-level `sops:`
metadata block, `ENC[...]` values), decrypted and encrypted by the real `sops`.

Where plaintext lives: only in memory. The age key goes to sops in its
environment (SOPS_AGE_KEY, never a file or an argument), the ciphertext on its
stdin and the plaintext comes back on its stdout; nothing decrypted is ever
written to disk by this module. Its callers keep it that way: the render cache
skips apps with decryption (engine/source/render_cache.py) and stage results are not
persisted (tasks/options.py), so decrypted values exist only in the process and
in the apply request to the Kubernetes API. Errors name the file and a reason
made from sops' message, never a value or the key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect_gitops.engine.source.children import dying_with_parent

if TYPE_CHECKING:  # the CLI imports this module and must start fast
    from pydantic import SecretStr

# Where `scripts/install-sops.sh` puts sops when it is not installed system-wide.
GO_BIN = Path.home() / "go" / "bin"
SOPS_TIMEOUT_S = 60.0
# Only the values of a Secret are encrypted: names, labels and kinds stay readable in Git.
SECRET_FIELDS_REGEX = "^(data|stringData)$"

_METADATA_LINE = re.compile(r'^(sops:|"sops"\s*:|\s*"sops"\s*:\s*\{)', re.MULTILINE)
# sops' own words, in the reasons a person can act on.
_REASONS = (
    ("MAC mismatch", "MAC mismatch: the file was changed after it was encrypted"),
    ("message authentication failed", "a value does not decrypt: the file was changed after it was encrypted"),
    ("failed to parse 'SOPS_AGE_KEY'", "the secretRef's value is not an age key (AGE-SECRET-KEY-...)"),
    ("did not match any of the recipients", "no age key of the app's secretRef can decrypt it (wrong key)"),
    ("no master key was able to decrypt", "no age key of the app's secretRef can decrypt it (wrong key)"),
    ("metadata not found", "it is not a SOPS-encrypted file (no sops metadata)"),
)
_LONG_HEX = re.compile(r"[0-9A-Fa-f]{16,}|ENC\[[^\]]*\]|AGE-SECRET-KEY-[0-9A-Z]+")


class SopsError(Exception):
    """A file sops could not decrypt or encrypt; the message names the file and
    the reason and holds no secret material."""

    def __init__(self, file: str, reason: str, action: str = "decrypt"):
        super().__init__(f"{file}: cannot {action}: {reason}")
        self.file, self.reason = file, reason


def find_sops(search_path: str | None = None) -> str | None:
    """sops on `search_path` (default: $PATH, then ~/go/bin)."""
    if search_path is None:
        search_path = os.pathsep.join(filter(None, [os.environ.get("PATH"), str(GO_BIN)]))
    return shutil.which("sops", path=search_path)


def looks_encrypted(text: str) -> bool:
    """The text of a SOPS-encrypted YAML or JSON file: `sops` metadata at the
    top level and ENC[...] values (a cheap test of the text, before parsing)."""
    return "ENC[" in text and _METADATA_LINE.search(text) is not None


def is_encrypted(obj: object) -> bool:
    """A parsed document that still carries SOPS metadata."""
    return isinstance(obj, dict) and isinstance(obj.get("sops"), dict) and "mac" in obj["sops"]


def format_of(file: str) -> str:
    return "json" if file.lower().endswith(".json") else "yaml"


@dataclass(frozen=True)
class Sops:
    """One sops binary, run with nothing of the caller's environment: no key
    file, cloud credential or SSH key of this machine is used by accident."""

    binary: str
    timeout_s: float = SOPS_TIMEOUT_S

    def decrypt(self, text: str, file: str, age_key: SecretStr) -> str:
        """The plaintext of one encrypted file (`file` is its repository path,
        for messages). Raises SopsError."""
        kind = format_of(file)
        return self._run(["--decrypt", "--input-type", kind, "--output-type", kind, "/dev/stdin"],
                         text, file, {"SOPS_AGE_KEY": age_key.get_secret_value()}, "decrypt")

    def encrypt(self, text: str, file: str, recipients: list[str],
                encrypted_regex: str = SECRET_FIELDS_REGEX) -> str:
        """The text encrypted for the age recipients, only the fields matching
        `encrypted_regex`. Raises SopsError."""
        kind = format_of(file)
        return self._run(["--encrypt", "--age", ",".join(recipients), "--encrypted-regex", encrypted_regex,
                          "--input-type", kind, "--output-type", kind, "/dev/stdin"], text, file, {}, "encrypt")

    def _run(self, args: list[str], text: str, file: str, env: dict[str, str], action: str) -> str:
        # HOME points nowhere: sops must not find ~/.config/sops/age/keys.txt or ~/.ssh keys;
        # and from / it finds no .sops.yaml whose rules would override the arguments.
        env = {"HOME": os.devnull, "PATH": os.defpath, **env}
        try:
            done = subprocess.run(dying_with_parent([self.binary, *args]), input=text, capture_output=True,
                                  text=True, encoding="utf-8", errors="replace", env=env, cwd="/",
                                  timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise SopsError(file, f"sops did not finish within {self.timeout_s:g} s", action) from None
        except OSError as error:
            raise SopsError(file, f"cannot run sops: {error.strerror or error}", action) from None
        if done.returncode != 0:
            raise SopsError(file, reason(done.stderr), action)
        return done.stdout


def reason(stderr: str) -> str:
    """Why sops failed, in a line a person can act on, without values or hashes."""
    for needle, said in _REASONS:
        if needle in stderr:
            return said
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "sops failed")
    return _LONG_HEX.sub("...", first)[:300]
