"""The Ed25519 signature over manifest.json (RFC 8032), and the centre's key fingerprint.

The key is stored in the bundle as ``public_key.pem``: a PEM ``PUBLIC KEY`` block holding the 44-byte
SubjectPublicKeyInfo of an Ed25519 key (RFC 8410), whose last 32 bytes are the raw public key. The
fingerprint is the SHA-256 of those 32 raw bytes, in hex; it needs nothing but the standard library.

The signature is always checked by :mod:`evidence.ed25519`, a pure-Python verifier written from RFC 8032, so
a bare Python is enough. When the ``cryptography`` package can be imported it checks the signature too, and
the signature holds only when both accept it (two implementations, one of them OpenSSL's). The report also
gives the OpenSSL (3.0 or later) command, an independent second check that needs no Python at all::

    openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in manifest.json -sigfile manifest.sig

which prints ``Signature Verified Successfully`` and exits 0 when the signature holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evidence import ed25519

#: DER prefix of an Ed25519 SubjectPublicKeyInfo (SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }).
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_BEGIN, _END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"


class KeyFormatError(ValueError):
    """public_key.pem is not an Ed25519 public key in PEM."""


def raw_public_key(pem: bytes) -> bytes:
    """The 32 raw bytes of the Ed25519 key in ``pem``."""
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError("public_key.pem is not ASCII") from None
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise KeyFormatError("public_key.pem is not a single PEM PUBLIC KEY block")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise KeyFormatError("public_key.pem holds invalid base64") from None
    if len(der) != 44 or not der.startswith(ED25519_SPKI_PREFIX):
        raise KeyFormatError("public_key.pem is not an Ed25519 key (RFC 8410 SubjectPublicKeyInfo)")
    return der[len(ED25519_SPKI_PREFIX) :]


def fingerprint(raw_key: bytes) -> str:
    """SHA-256 of the raw public key, hex."""
    return hashlib.sha256(raw_key).hexdigest()


def format_fingerprint(fp: str) -> str:
    """Groups of four hex digits, easier to compare by eye or read over the telephone."""
    return " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))


def cryptography_version(allowed: bool = True) -> str | None:
    """The version of the importable ``cryptography`` package, or None."""
    if not allowed:
        return None
    try:
        import cryptography
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401
    except ImportError:
        return None
    return str(cryptography.__version__)


def verify_with_cryptography(raw_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``raw_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Verdict:
    """What the verifiers available here say of one signature."""

    valid: bool
    summary: str


def check_signature(raw_key: bytes, sig: bytes, message: bytes, *, use_cryptography: bool = True) -> Verdict:
    """Check ``sig`` over ``message`` with the pure-Python verifier and, when importable, ``cryptography``;
    valid only when every verifier that ran accepts it."""
    pure = ed25519.verify(raw_key, sig, message)
    version = cryptography_version(use_cryptography)
    by = "by the pure-Python RFC 8032 verifier" + ("" if version is None else f" and by cryptography {version}")
    if version is not None:
        other = verify_with_cryptography(raw_key, sig, message)
        if other != pure:
            return Verdict(False, f"the verifiers disagree: pure Python says {'valid' if pure else 'invalid'}, "
                           f"cryptography {version} says {'valid' if other else 'invalid'}; do not rely on it")
    if pure:
        return Verdict(True, f"Ed25519 over manifest.json verified with public_key.pem {by}")
    return Verdict(False, f"the Ed25519 signature over manifest.json does not verify with public_key.pem {by}")


def openssl_command(directory: Path | None) -> list[str]:
    """The OpenSSL command that checks the signature of the files extracted into ``directory`` (None: the
    current directory, where the three files were unzipped)."""
    base = directory if directory is not None else Path()
    return [
        "openssl", "pkeyutl", "-verify", "-pubin",
        "-inkey", str(base / "public_key.pem"),
        "-rawin", "-in", str(base / "manifest.json"),
        "-sigfile", str(base / "manifest.sig"),
    ]


def command_text(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def extract_signed_files(directory: Path, manifest: bytes, signature: bytes, pem: bytes) -> None:
    """Write the three files the OpenSSL command reads."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (("manifest.json", manifest), ("manifest.sig", signature), ("public_key.pem", pem)):
        (directory / name).write_bytes(data)


def run_openssl(command: list[str]) -> tuple[bool, str]:
    """Run the OpenSSL command; (True, output) when it reports a verified signature."""
    binary = shutil.which(command[0])
    if binary is None:
        return False, "openssl is not on PATH"
    proc = subprocess.run([binary, *command[1:]], capture_output=True, text=True, timeout=60, check=False)
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0 and "Verified Successfully" in proc.stdout, output
