"""``lookup`` runs the zero-byte matcher stages (names, exact-metadata) before the content stages so that a
timeout never costs what the metadata alone proves; ``run_matcher`` is handed that report and must not run
those stages a second time, on every path (triage on or off, peers listed or not)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from p2pwatch.config import MonitorConfig
from p2pwatch.investigate import lookup as lookup_module
from p2pwatch.investigate.examine import Examination
from p2pwatch.investigate.lookup import lookup
from p2pwatch.match import matcher
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import MatchReport, RegisteredContent, RegistryIndex, zero_byte_stages
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent


class _Reader:
    """A content source that is never asked for a piece (the only same-size file is proven already)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def read_pieces_async(self, wanted: Iterable[int], timeout: float | None = None) -> dict[int, Any]:
        self.asked.extend(wanted)
        raise AssertionError("no piece is needed")

    def downloaded(self) -> int:
        return 0


def _registered(tmp_path: Path) -> tuple[Metainfo, RegistryIndex]:
    data = tmp_path / "clip.bin"
    data.write_bytes(os.urandom(5 * 16384 + 10))
    meta = parse_torrent(make_v1_torrent("clip.bin", [("clip.bin", data)], piece_length=16384, single_file=True))
    index = RegistryIndex([RegisteredContent("c" * 64, "c1", fingerprint_file(data, media=False))],
                          {"c1": ["clip"]})
    return meta, index


@pytest.mark.parametrize("triage", [True, False])
@pytest.mark.parametrize("with_peers", [False, True])
async def test_each_zero_byte_stage_runs_once_per_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         triage: bool, with_peers: bool) -> None:
    meta, index = _registered(tmp_path)
    runs = {"names": 0, "exact-metadata": 0}
    names, exact = matcher.name_candidates, matcher.exact_metadata_matches

    def counted_names(idx: RegistryIndex, m: Metainfo) -> list[matcher.Candidate]:
        runs["names"] += 1
        return names(idx, m)

    async def counted_exact(idx: RegistryIndex, m: Metainfo) -> list[matcher.Match]:
        runs["exact-metadata"] += 1
        return await exact(idx, m)

    monkeypatch.setattr(matcher, "name_candidates", counted_names)
    monkeypatch.setattr(matcher, "exact_metadata_matches", counted_exact)
    reader = _Reader()
    opened: list[tuple[str, int]] = []

    @contextlib.asynccontextmanager
    async def open_reader(_meta: Metainfo, options: Any) -> AsyncIterator[_Reader]:
        opened.extend(options.peers)
        yield reader

    async def listed(_urls: Any, exam: Examination, _config: Any) -> None:
        exam.add_listing(("127.0.0.1", 6881), "tracker", "http://127.0.0.1:1/announce")

    async def no_probes(*_args: Any, **_kw: Any) -> None:
        return None

    monkeypatch.setattr(lookup_module, "open_torrent_reader", open_reader)
    monkeypatch.setattr(lookup_module, "harvest_trackers", listed)
    monkeypatch.setattr(lookup_module, "probe_listed", no_probes)
    monkeypatch.setattr(lookup_module, "probe_pex_listed", no_probes)
    config = MonitorConfig()
    config.triage.enabled = triage
    trackers = ["http://127.0.0.1:1/announce"] if with_peers else []
    outcome = await lookup(meta.infohash, config=config, dht=None, trackers=trackers, metainfo=meta, index=index,
                           timeout=30)
    assert runs == {"names": 1, "exact-metadata": 1}
    assert outcome.report is not None and not outcome.timed_out
    assert [(m.method, m.bytes_fetched) for m in outcome.report.matches] == [("exact-metadata", 0)]
    assert [c.text for c in outcome.report.candidates] == ["clip.bin", "clip.bin"]  # the name and the path
    # the content stages did run where they could (a registered size queues the torrent past triage)
    assert opened == ([("127.0.0.1", 6881)] if with_peers else [])
    assert reader.asked == []


async def test_a_zero_byte_report_is_copied_and_never_changed(tmp_path: Path) -> None:
    meta, index = _registered(tmp_path)
    done = await zero_byte_stages(index, meta)
    again = await zero_byte_stages(index, meta, done)
    assert again is not done and again.matches == done.matches and again.candidates == done.candidates
    again.matches.clear()
    assert len(done.matches) == 1
    with pytest.raises(ValueError, match="not"):
        await zero_byte_stages(index, meta, MatchReport("0" * 40))
