"""Re-checking match proofs and served-piece observations against the metainfo in the bundle (SPEC.md).

Every check here re-hashes what the bundle holds; nothing is taken from the centre's word except the
registered fingerprint values, which the proof records (they are hashes of the victim's file, not content):

* ``exact-metadata``: the matched file's v2 pieces root, or its v1 piece hashes (the file starts on a piece
  boundary), equal the registered values recorded in the proof;
* ``exact-piece``: the recorded piece hash is the metainfo's; the piece file in the bundle (the bytes, or
  their hash) verifies against it; and every 16 KiB block of the matched file that lies wholly inside the
  piece has an observed hash (re-computed from the bytes when they are included) equal to the registered
  leaf hash listed in the proof;
* ``perceptual``: each recorded Hamming distance is re-computed from the two recorded hashes, the threshold
  is re-applied, the count of matching frames and (when recorded) the consistent time offset are re-checked;
* levels 3-4: the piece hash in the probe transcript is the metainfo's, and included piece bytes hash to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from evidence.torrent import BLOCK_SIZE, Torrent, TorrentError, TorrentFile

#: ``(torrent key, piece index) -> (kind, bytes)`` where kind is "bin", "sha1" or "sha256", or None.
PieceLookup = Callable[[str, int], "tuple[str, bytes] | None"]
_HEX = frozenset("0123456789abcdef")


class ProofError(ValueError):
    """A proof does not hold."""


def _hex(value: Any, what: str, size: int | None = None) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _HEX or len(value) % 2:
        raise ProofError(f"{what} must be lowercase hex")
    if size is not None and len(value) != 2 * size:
        raise ProofError(f"{what} must be {size} bytes of hex")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ProofError(f"{what} must be a non-negative integer")
    return value


def short(value: str) -> str:
    return value[:16] + "…" if len(value) > 16 else value


class TorrentIndex:
    """The bundle's torrents by every form of their infohash (v1, v2, v2 truncated)."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, Torrent]] = {}

    def add(self, key: str, torrent: Torrent) -> None:
        for ident in torrent.ids() | {key}:
            self._by_id[ident] = (key, torrent)

    def get(self, infohash: Any) -> tuple[str, Torrent]:
        if not isinstance(infohash, str) or infohash.lower() not in self._by_id:
            raise ProofError(f"infohash {str(infohash)[:64]!r} is not among the bundle's torrents")
        return self._by_id[infohash.lower()]


def _file(torrent: Torrent, match: dict[str, Any]) -> TorrentFile:
    index = _int(match.get("file_index"), "file_index")
    if index >= len(torrent.files) or torrent.files[index].pad:
        raise ProofError(f"file_index {index} is not a content file of the torrent")
    f = torrent.files[index]
    if match.get("file_length") is not None and match["file_length"] != f.length:
        raise ProofError(f"file_length {match['file_length']} differs from the metainfo's {f.length}")
    if match.get("file_path") is not None and match["file_path"] != f.display_path:
        raise ProofError(f"file_path {str(match['file_path'])[:100]!r} differs from the metainfo's")
    return f


def check_match(match: dict[str, Any], torrents: TorrentIndex, pieces: PieceLookup) -> str:
    """Check one match proof; return a one-line description of what was re-computed."""
    key, torrent = torrents.get(match.get("infohash"))
    proof = match.get("proof")
    if not isinstance(proof, dict):
        raise ProofError("the match has no proof object")
    method = match.get("method")
    try:
        if method == "exact-metadata":
            return _exact_metadata(torrent, _file(torrent, match), proof)
        if method == "exact-piece":
            return _exact_piece(key, torrent, _file(torrent, match), proof, pieces)
        if method == "perceptual":
            _file(torrent, match)
            return _perceptual(proof)
    except TorrentError as exc:
        raise ProofError(str(exc)) from exc
    raise ProofError(f"unknown match method {str(method)[:40]!r}")


def _exact_metadata(torrent: Torrent, f: TorrentFile, proof: dict[str, Any]) -> str:
    kind = proof.get("kind")
    if kind == "v2-pieces-root":
        registered = _hex(proof.get("pieces_root"), "pieces_root", 32)
        if f.pieces_root is None:
            raise ProofError(f"{f.display_path!r} has no v2 pieces root in the metainfo")
        if f.pieces_root.hex() != registered:
            raise ProofError(f"the metainfo's pieces root {short(f.pieces_root.hex())} is not the registered one")
        return f"v2 pieces root {short(registered)} of {f.display_path!r} ({f.length} bytes) equals the registered root"
    if kind != "v1-piece-table":
        raise ProofError(f"unknown exact-metadata proof kind {str(kind)[:40]!r}")
    length = _int(proof.get("piece_length"), "piece_length")
    if length != torrent.piece_length or not torrent.piece_hashes:
        raise ProofError(f"piece_length {length} is not the torrent's v1 piece length {torrent.piece_length}")
    if f.offset % length:
        raise ProofError(f"{f.display_path!r} does not start on a piece boundary")
    first = _int(proof.get("first_piece"), "first_piece")
    if first != f.offset // length:
        raise ProofError(f"first_piece {first} is not where {f.display_path!r} starts ({f.offset // length})")
    hashes = proof.get("piece_hashes")
    if not isinstance(hashes, list):
        raise ProofError("piece_hashes must be a list")
    if not max(1, f.length // length) <= len(hashes) <= -(-f.length // length):
        raise ProofError(f"{len(hashes)} hashes do not cover every whole piece of a {f.length}-byte file")
    for j, registered in enumerate(hashes):
        if torrent.piece_hashes[first + j].hex() != _hex(registered, f"piece_hashes[{j}]", 20):
            raise ProofError(f"piece {first + j}: the metainfo's SHA-1 differs from the registered table")
    return (f"v1 piece hashes {first}..{first + len(hashes) - 1} of {f.display_path!r} ({f.length} bytes) "
            "equal the registered table")


def _expected_leaves(torrent: Torrent, f: TorrentFile, index: int) -> list[tuple[int, int, int]]:
    """(leaf index, offset in the piece, length) of the file's 16 KiB blocks wholly inside the piece."""
    start = index * torrent.piece_length
    end = start + torrent.piece_size(index)
    first = max(0, -(-(start - f.offset) // BLOCK_SIZE))
    out = []
    k = first
    while k * BLOCK_SIZE < f.length:
        block_start = f.offset + k * BLOCK_SIZE
        block_len = min(BLOCK_SIZE, f.length - k * BLOCK_SIZE)
        if block_start + block_len > end:
            break
        out.append((k, block_start - start, block_len))
        k += 1
    return out


def _piece_file(key: str, torrent: Torrent, index: int, algorithm: str, expected: bytes,
                pieces: PieceLookup) -> bytes | None:
    """Check the piece file of the bundle; return the piece bytes when included."""
    found = pieces(key, index)
    if found is None:
        raise ProofError(f"pieces/{key}/{index}.* is missing")
    kind, data = found
    if kind == "bin":
        if len(data) != torrent.piece_size(index):
            raise ProofError(f"piece {index}: {len(data)} bytes, the metainfo says {torrent.piece_size(index)}")
        if torrent.hash_piece_data(index, data, algorithm) != expected:
            raise ProofError(f"piece {index}: the included bytes do not hash to the metainfo's piece hash")
        return data
    wanted = "sha1" if algorithm == "sha1" else "sha256"
    if kind != wanted:
        raise ProofError(f"piece {index}: a .{kind} file where the {algorithm} hash needs .{wanted}")
    if data.strip().decode("ascii", "replace") != expected.hex():
        raise ProofError(f"piece {index}: the hash file differs from the metainfo's piece hash")
    return None


def _exact_piece(key: str, torrent: Torrent, f: TorrentFile, proof: dict[str, Any], pieces: PieceLookup) -> str:
    index = _int(proof.get("piece_index"), "piece_index")
    algorithm = proof.get("piece_hash_algorithm", torrent.default_algorithm())
    expected = torrent.piece_hash(index, str(algorithm))
    if _hex(proof.get("piece_hash"), "piece_hash") != expected.hex():
        raise ProofError(f"piece {index}: the recorded hash is not the metainfo's piece hash")
    data = _piece_file(key, torrent, index, str(algorithm), expected, pieces)
    leaves = _expected_leaves(torrent, f, index)
    if not leaves:
        raise ProofError(f"piece {index} holds no whole 16 KiB block of {f.display_path!r}")
    blocks = proof.get("blocks")
    if not isinstance(blocks, list) or [b.get("leaf_index") if isinstance(b, dict) else None
                                         for b in blocks] != [k for k, _, _ in leaves]:
        raise ProofError(f"blocks must list leaves {leaves[0][0]}..{leaves[-1][0]}, the file's whole blocks "
                         f"in piece {index}")
    for (k, offset, length), block in zip(leaves, blocks, strict=True):
        observed = _hex(block.get("observed_sha256"), f"block {k} observed_sha256", 32)
        if observed != _hex(block.get("registered_sha256"), f"block {k} registered_sha256", 32):
            raise ProofError(f"block {k}: the observed hash differs from the registered leaf hash")
        if data is not None and hashlib.sha256(data[offset : offset + length]).hexdigest() != observed:
            raise ProofError(f"block {k}: the included piece bytes do not hash to the recorded block hash")
    source = "re-computed from the included piece bytes" if data is not None else "as recorded (bytes not included)"
    return (f"piece {index} verifies against the metainfo ({algorithm}); {len(leaves)} blocks of "
            f"{f.display_path!r} equal the registered leaf hashes, {source}")


def _perceptual(proof: dict[str, Any]) -> str:
    threshold = _int(proof.get("threshold"), "threshold")
    min_frames = _int(proof.get("min_frames", 1), "min_frames")
    frames = proof.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ProofError("frames must be a non-empty list")
    offset, tolerance = proof.get("time_offset"), proof.get("offset_tolerance")
    matched = 0
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise ProofError(f"frames[{i}] must be an object")
        a = _hex(frame.get("registered_hash"), f"frames[{i}].registered_hash")
        b = _hex(frame.get("observed_hash"), f"frames[{i}].observed_hash")
        if len(a) != len(b):
            raise ProofError(f"frames[{i}]: hashes of different lengths")
        distance = (int(a, 16) ^ int(b, 16)).bit_count()
        if frame.get("distance") != distance:
            raise ProofError(f"frames[{i}]: recorded distance {frame.get('distance')} but the hashes differ in "
                             f"{distance} bits")
        if distance > threshold:
            continue
        matched += 1
        if offset is not None and "observed_time" in frame and "registered_time" in frame:
            gap = float(frame["observed_time"]) - float(frame["registered_time"]) - float(offset)
            if abs(gap) > float(tolerance or 0):
                raise ProofError(f"frames[{i}]: time offset off by {gap:.3f}s from the recorded {offset}s")
    if proof.get("matched_frames") != matched:
        raise ProofError(f"matched_frames {proof.get('matched_frames')} but {matched} frames are within {threshold}")
    if matched < min_frames:
        raise ProofError(f"{matched} frames within the threshold, fewer than min_frames {min_frames}")
    algorithm = str(proof.get("algorithm", "perceptual hash"))[:40]
    return f"{matched}/{len(frames)} {algorithm} distances re-computed, all within {threshold} (needs {min_frames})"


def check_served(row: dict[str, Any], transcript: dict[str, Any], torrents: TorrentIndex,
                 pieces: PieceLookup) -> str:
    """Check a level-3/4 observation against its probe transcript and the metainfo."""
    key, torrent = torrents.get(row.get("torrent"))
    if transcript.get("infohash") is not None and torrents.get(transcript["infohash"])[0] != key:
        raise ProofError("the transcript is for another torrent")
    level = row.get("level")
    if type(transcript.get("level")) is not int or transcript["level"] < level:
        raise ProofError(f"the transcript reached level {transcript.get('level')}, the row claims {level}")
    for name in ("ip", "port"):
        if row.get(name) is not None and transcript.get(name) != row[name]:
            raise ProofError(f"the transcript's {name} differs from the observation's")
    algorithm = str(transcript.get("piece_hash_algorithm") or torrent.default_algorithm())
    if level == 4:
        return _served_whole(key, torrent, transcript, algorithm, pieces)
    index = _int(transcript.get("piece_verified"), "transcript piece_verified")
    try:
        expected = torrent.piece_hash(index, algorithm)
        if _hex(transcript.get("piece_hash"), "transcript piece_hash") != expected.hex():
            raise ProofError(f"piece {index}: the transcript's hash is not the metainfo's piece hash")
        included = pieces(key, index)
        if included is not None:
            _piece_file(key, torrent, index, algorithm, expected, pieces)
    except TorrentError as exc:
        raise ProofError(str(exc)) from exc
    return "bytes re-hashed" if included is not None and included[0] == "bin" else "hash compared"


def _served_whole(key: str, torrent: Torrent, transcript: dict[str, Any], algorithm: str,
                  pieces: PieceLookup) -> str:
    f = _file(torrent, transcript)
    verified = transcript.get("pieces_verified")
    if not isinstance(verified, list):
        raise ProofError("a level-4 transcript needs pieces_verified")
    start, stop = f.offset // torrent.piece_length, -(-(f.offset + f.length) // torrent.piece_length)
    seen = set()
    try:
        for item in verified:
            index = _int(item.get("index") if isinstance(item, dict) else None, "pieces_verified index")
            if torrent.piece_hash(index, algorithm).hex() != _hex(item.get("hash"), "pieces_verified hash"):
                raise ProofError(f"piece {index}: the transcript's hash is not the metainfo's piece hash")
            seen.add(index)
    except TorrentError as exc:
        raise ProofError(str(exc)) from exc
    if not set(range(start, stop)) <= seen:
        raise ProofError(f"pieces {start}..{stop - 1} of {f.display_path!r} are not all verified")
    return "whole file"
