"""``p2pwatch verify`` and ``p2pwatch keys`` (docs/CLI.md): bundle verification and the signing key.

``p2pwatch verify BUNDLE`` is the same as ``python -m evidence verify BUNDLE`` (the stand-alone verifier,
standard library only): it prints each check and exits 0 when every check holds, 1 when one fails, 2 for a
usage error. ``p2pwatch keys generate`` creates the centre's Ed25519 key under ``<home>/keys/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from p2pwatch.cli.options import emit_json, handle_errors


@click.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--expect-fingerprint", metavar="HEX", default=None,
              help="the centre's published key fingerprint; the check fails when the bundle's key differs")
@click.option("--run-openssl", is_flag=True, help="also run the openssl command, an independent second check")
@click.option("--extract-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write the files the openssl command reads to DIR")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@handle_errors
def verify(bundle: Path, expect_fingerprint: str | None, run_openssl: bool, extract_dir: Path | None,
           as_json: bool) -> None:
    """Check an evidence bundle: manifest, signature, chain, match proofs, served pieces."""
    from evidence.__main__ import run_verify
    from evidence.verify import Options

    options = Options(run_openssl=run_openssl, extract_dir=extract_dir, expect_fingerprint=expect_fingerprint)
    code = run_verify(bundle, options, as_json=as_json, out=sys.stdout, err=sys.stderr)
    sys.stdout.flush()
    if code:
        raise SystemExit(code)


@click.group("keys")
def keys() -> None:
    """The centre's Ed25519 key that signs evidence bundles."""


@keys.command("generate")
@click.option("--force", is_flag=True, help="replace an existing key (old bundles keep the old fingerprint)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_context
@handle_errors
def generate(ctx: click.Context, force: bool, as_json: bool) -> None:
    """Create <home>/keys/centre_ed25519.pem (mode 0600) and print its fingerprint."""
    from p2pwatch.bundle import keys as keyfile

    path = keyfile.default_key_path(ctx.obj["home"])
    key = keyfile.generate_key()
    keyfile.save_key(path, key, overwrite=force)
    fp = keyfile.fingerprint(key)
    if as_json:
        emit_json({"path": str(path), "fingerprint": fp})
        return
    click.echo(f"wrote {path}")
    click.echo(f"fingerprint (SHA-256 of the raw Ed25519 public key): {fp}")
    click.echo("publish this fingerprint so that police can check the bundles signed with this key")


@keys.command("show")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_context
@handle_errors
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the fingerprint and public key of the centre's key."""
    from p2pwatch.bundle import keys as keyfile

    path = keyfile.default_key_path(ctx.obj["home"])
    key = keyfile.load_key(path)
    if as_json:
        emit_json({"path": str(path), "fingerprint": keyfile.fingerprint(key),
                   "public_key_pem": keyfile.public_pem(key).decode("ascii")})
        return
    click.echo(f"{path}\nfingerprint: {keyfile.fingerprint(key)}\n{keyfile.public_pem(key).decode('ascii')}", nl=False)
