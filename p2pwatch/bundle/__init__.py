"""Writing evidence bundles (the format and the verifier live in the top-level ``evidence`` package).

:func:`write_bundle` turns plain data (what the store exports) into one signed ZIP; :mod:`.keys` manages
the centre's Ed25519 signing key.
"""

from __future__ import annotations

from p2pwatch.bundle.writer import BundleSummary, PieceRecord, TorrentRecord, build_manifest, write_bundle

__all__ = ["BundleSummary", "PieceRecord", "TorrentRecord", "build_manifest", "write_bundle"]
