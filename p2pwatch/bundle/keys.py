"""The centre's Ed25519 signing key (RFC 8032) for evidence bundles.

The private key is a PKCS#8 PEM file, unencrypted, created with mode 0600 (``<home>/keys/centre_ed25519.pem``
by default); it is never overwritten unless asked. The public key goes into every bundle as
``public_key.pem`` (SubjectPublicKeyInfo PEM, RFC 8410). The fingerprint is the SHA-256 of the 32 raw
public-key bytes in hex; the centre publishes it so that police can check that a bundle was signed by it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pwatch.errors import ConfigError, KeyFileError

KEY_DIR = "keys"
KEY_FILE = "centre_ed25519.pem"


def default_key_path(home: Path) -> Path:
    return home / KEY_DIR / KEY_FILE


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def save_key(path: Path, key: Ed25519PrivateKey, *, overwrite: bool = False) -> None:
    """Write the private key as PEM with mode 0600 (the directory 0700 when created).

    Refuses an existing file unless ``overwrite``; the file is written under a temporary name and renamed,
    so a crash never leaves a half-written key.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --force to replace it (bundles signed with the old key "
                          "will then no longer match the published fingerprint)")
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem(key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read the private key; refuses files others can read, and keys that are not Ed25519."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"no signing key at {path}; create one with 'p2pwatch keys generate'") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key
