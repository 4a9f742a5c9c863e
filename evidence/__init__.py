"""Evidence bundles of p2pwatch: the format (SPEC.md beside this file) and a verifier on the Python
standard library alone, so that police can check a bundle without installing p2pwatch::

    python -m evidence verify BUNDLE.zip

This package must never import p2pwatch or anything outside the standard library: the Ed25519 signature is
checked by :mod:`evidence.ed25519` (pure Python, RFC 8032); ``cryptography`` cross-checks it only when it
happens to be installed, and the report gives the OpenSSL command as an independent second check.
"""

from __future__ import annotations

FORMAT_NAME = "p2pwatch-evidence-bundle"
FORMAT_VERSION = 1

__all__ = ["FORMAT_NAME", "FORMAT_VERSION"]
