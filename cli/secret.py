"""`gitops secret ...`: Secrets kept in Git encrypted with SOPS for age
recipients, and the age key that decrypts them saved as a Prefect Secret block
(what an app's `decryption.secretRef` names)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import typer
from rich.markup import escape

from prefect_gitops.cli.console import err, error
# small: no pydantic
from prefect_gitops.engine.source.sops import SECRET_FIELDS_REGEX, Sops, SopsError, find_sops, looks_encrypted

secret_app = typer.Typer(help="Secrets encrypted in Git with SOPS and age.", no_args_is_help=True)


@secret_app.command("encrypt")
def secret_encrypt(
    file: Path = typer.Argument(..., help="A YAML (or JSON) file of Secrets.", exists=True, dir_okay=False),
    age_recipient: list[str] = typer.Option(..., "--age-recipient",
                                            help="An age public key (age1...); repeat for several."),
    in_place: bool = typer.Option(False, "--in-place", "-i", help="Rewrite FILE instead of printing the result."),
    encrypted_regex: str = typer.Option(SECRET_FIELDS_REGEX, "--encrypted-regex",
                                        help="The fields whose values are encrypted."),
) -> None:
    """Encrypt the data and stringData of the Secrets in FILE with sops: names,
    kinds and labels stay readable in Git. Prints the result on stdout."""
    sops = find_sops()
    if sops is None:
        _fail("sops is not installed (run scripts/install-sops.sh)")
    text = file.read_text(encoding="utf-8")
    if looks_encrypted(text):
        _fail(f"{file} is already SOPS-encrypted")
    try:
        encrypted = Sops(sops).encrypt(text, file.name, age_recipient, encrypted_regex)
    except SopsError as failure:
        _fail(f"{file}: cannot encrypt: {failure.reason}")
    if not in_place:
        sys.stdout.write(encrypted)
        return
    _replace(file, encrypted)
    err.print(f"encrypted {escape(str(file))} for {len(age_recipient)} age recipient(s)")


def secret_key(  # registered in cli/main.py, once the Prefect API is chosen

    name: str = typer.Argument(..., help="Block name, as an app's decryption.secretRef names it."),
    age_key_file: Path = typer.Option(..., "--age-key-file", help="The file age-keygen wrote.", exists=True,
                                      dir_okay=False),
) -> None:
    """Save an age private key as a Prefect Secret block (read from a file,
    never from the command line)."""
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    text = age_key_file.read_text(encoding="utf-8").strip()
    if "AGE-SECRET-KEY-" not in text:
        _fail(f"{age_key_file} holds no age private key (AGE-SECRET-KEY-...)")
    Secret(value=SecretStr(text)).save(name, overwrite=True)
    err.print(f"saved the age key as the Secret block [bold]{escape(name)}[/bold]")


def _replace(file: Path, text: str) -> None:
    """Write beside, then rename over: FILE is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, file.stat().st_mode & 0o777)
    os.replace(tmp, file)


def _fail(message: str) -> None:
    error(message)
    raise typer.Exit(2)
