"""Matcher stages 1–3 against torrents made by libtorrent and pieces served by libtorrent seeders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import (
    METHOD_EXACT_METADATA,
    METHOD_EXACT_PIECE,
    RegisteredContent,
    RegistryIndex,
    exact_metadata_matches,
    match_torrent,
    name_candidates,
)
from p2pwatch.probe.bulk_fetch import FetchOptions, open_torrent_reader
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import parse_torrent
from tests.conftest import loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, create_torrent
except ImportError:  # pragma: no cover
    lt = None

SIZE = 300_000 + 1234


@pytest.fixture
def registered(tmp_path: Path) -> tuple[Path, RegistryIndex]:
    require_component("libtorrent", lt is not None)
    original = tmp_path / "orig" / "kim_jiyoung.bin"
    original.parent.mkdir()
    original.write_bytes(os.urandom(SIZE))
    fp = fingerprint_file(original, media=False)
    index = RegistryIndex([RegisteredContent(fp.fingerprint_id, "case-1", fp)], {"case-1": ["Kim Jiyoung"]})
    return original, index


def _torrent(root: Path, version: str, piece_length: int = 32 * 1024) -> bytes:
    return create_torrent(root, version=version, piece_length=piece_length)


async def test_exact_metadata_v1_aligned_and_v2_root(tmp_path: Path, registered: tuple[Path, RegistryIndex]) -> None:
    original, index = registered
    content_id = index.contents[0].content_id
    for version in ("v1", "v2", "hybrid"):
        meta = parse_torrent(_torrent(original, version))
        found = await exact_metadata_matches(index, meta)
        assert [(m.content_id, m.method) for m in found][:1] == [(content_id, METHOD_EXACT_METADATA)], version
        assert found[0].bytes_fetched == 0
        assert found[0].proof["kind"] == ("v1-piece-table" if version == "v1" else "v2-pieces-root")
    # other piece lengths too, as long as the registered table has them
    meta = parse_torrent(_torrent(original, "v1", piece_length=64 * 1024))
    assert await exact_metadata_matches(index, meta)


async def test_renamed_copy_behind_a_text_file_needs_a_piece(tmp_path: Path, registered: tuple[Path, RegistryIndex]
                                                             ) -> None:
    original, index = registered
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "a_readme.txt").write_bytes(b"hello " * 1000)
    shutil.copy(original, folder / "b_holiday.bin")
    meta = parse_torrent(make_v1_torrent("pack", [("a_readme.txt", folder / "a_readme.txt"),
                                                  ("b_holiday.bin", folder / "b_holiday.bin")], piece_length=32768))
    assert meta.files[1].offset % meta.piece_length != 0
    assert await exact_metadata_matches(index, meta) == []
    assert name_candidates(index, meta) == []  # renamed: no keyword either


async def test_keyword_candidate_is_not_a_match(tmp_path: Path, registered: tuple[Path, RegistryIndex]) -> None:
    _, index = registered
    decoy = tmp_path / "Kim.Jiyoung.2024.bin"
    decoy.write_bytes(os.urandom(50_000))
    meta = parse_torrent(_torrent(decoy, "v1"))
    candidates = name_candidates(index, meta)
    assert candidates and candidates[0].case == "case-1"
    assert await exact_metadata_matches(index, meta) == []


@pytest.mark.interop
async def test_exact_piece_match_and_same_size_decoy_rejected(tmp_path: Path,
                                                             registered: tuple[Path, RegistryIndex]) -> None:
    original, index = registered
    copy_dir, decoy_dir = tmp_path / "copy", tmp_path / "decoy"
    for d in (copy_dir, decoy_dir):
        d.mkdir()
        (d / "a_readme.txt").write_bytes(b"notes " * 700)
    shutil.copy(original, copy_dir / "b.bin")
    (decoy_dir / "b.bin").write_bytes(os.urandom(SIZE))  # same size, same name, different bytes
    copy_t, decoy_t = (make_v1_torrent(d.name, [("a_readme.txt", d / "a_readme.txt"), ("b.bin", d / "b.bin")],
                                       piece_length=32768) for d in (copy_dir, decoy_dir))
    with LocalSwarm(tmp_path, extra_settings={"enable_dht": False}) as swarm:
        seeder = swarm.start_session(loopback_address(), dht=False)
        swarm.seed(seeder, copy_t, tmp_path)
        swarm.seed(seeder, decoy_t, tmp_path)
        await trio.to_thread.run_sync(swarm.wait_seeding)
        reports = []
        for torrent in (copy_t, decoy_t):
            meta = parse_torrent(torrent)
            options = FetchOptions(bind_ip=loopback_address(), peers=(seeder.endpoint,), allow_local=True, timeout=30)
            with trio.fail_after(60):
                async with open_torrent_reader(meta, options) as reader:
                    reports.append(await match_torrent(index, meta, reader))
    good, bad = reports
    assert [m.method for m in good.matches] == [METHOD_EXACT_PIECE]
    match = good.matches[0]
    assert match.file_path.endswith("b.bin")
    assert 32 * 1024 <= match.bytes_fetched <= 32 * 1024 * 101 // 100  # one piece, at most 1 % more
    blocks = match.proof["blocks"]
    assert blocks and all(b["observed_sha256"] == b["registered_sha256"] for b in blocks)
    assert match.proof["piece_hash"] == parse_torrent(copy_t).piece_hashes[match.proof["piece_index"]].hex()
    assert match.proof["served_by"] == [f"{seeder.ip}:{seeder.port}"]
    assert bad.matches == []
    assert bad.rejections and "differ" in bad.rejections[0].reason
