"""Synthetic registered items for tests and benchmarks of the registry at scale: fingerprints made of random
hashes (never of any content), consistent enough to pass :meth:`Fingerprint.from_json`'s checks, and video or
image media fingerprints with random frame hashes.
"""

from __future__ import annotations

import random
from types import MappingProxyType

from p2pwatch.match.fingerprint import Fingerprint
from p2pwatch.match.media_types import ContentKind, FrameHash, MediaFingerprint
from p2pwatch.torrent.merkle import BLOCK_SIZE, HASH_SIZE

_V1_LENGTHS = tuple(1 << k for k in range(14, 25))
_SHA1_SIZE = 20


def _table_lengths(size: int) -> list[int]:
    smaller = [n for n in _V1_LENGTHS if n < size]
    bigger = [n for n in _V1_LENGTHS if n >= size]
    return smaller + bigger[:1]


def synthetic_fingerprint(rng: random.Random, size: int, media: MediaFingerprint | None = None,
                          kind: ContentKind | None = None) -> Fingerprint:
    """A fingerprint of a file of ``size`` bytes that never existed: random leaf and piece hashes."""
    blocks = -(-size // BLOCK_SIZE)
    tables = {n: rng.randbytes(-(-size // n) * _SHA1_SIZE) for n in _table_lengths(size)}
    return Fingerprint(size=size, md5=rng.randbytes(16).hex(), sha1=rng.randbytes(20).hex(),
                       sha256=rng.randbytes(32).hex(), leaf_hashes=rng.randbytes(blocks * HASH_SIZE),
                       v1_piece_tables=MappingProxyType(tables),
                       kind=kind or (media.kind if media is not None else ContentKind.OTHER), media=media)


def synthetic_video(rng: random.Random, frames: int, *, step: float = 2.0) -> MediaFingerprint:
    """A video's media fingerprint with ``frames`` random frame hashes ``step`` seconds apart."""
    hashes = tuple(FrameHash(round(i * step, 3), rng.getrandbits(64)) for i in range(frames))
    return MediaFingerprint(ContentKind.VIDEO, 640, 360, duration=frames * step, codec="h264", frame_hashes=hashes)


def synthetic_image(rng: random.Random, *, pdq: bool = True) -> MediaFingerprint:
    return MediaFingerprint(ContentKind.IMAGE, 800, 600, image_phash=rng.getrandbits(64),
                            image_pdq=rng.randbytes(32) if pdq else None)
