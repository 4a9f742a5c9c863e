"""Probes of real libtorrent seeders on their own 127.0.0.x addresses: v1, v2, hybrid, and one that
requires encryption. Each must reach level 3 (verified metadata and a verified piece)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pwatch.probe.peer_probe import probe_peer
from p2pwatch.torrent.metainfo import Metainfo, parse_info, parse_torrent
from tests.conftest import loopback_address, require_component

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import create_torrent
except ImportError:  # pragma: no cover - depends on the machine
    lt = None

pytestmark = pytest.mark.interop


@dataclass
class Seeder:
    ip: str
    session: Any
    handle: Any
    metainfo: Metainfo
    listening: bool = False

    @property
    def port(self) -> int:
        return int(self.session.listen_port())

    async def wait_ready(self) -> None:
        """Poll libtorrent's alerts and status until it listens and seeds (no blind sleeps)."""
        with trio.fail_after(30):
            while True:
                for alert in self.session.pop_alerts():
                    if isinstance(alert, lt.listen_succeeded_alert):
                        self.listening = True
                    elif isinstance(alert, lt.listen_failed_alert):
                        raise AssertionError(f"libtorrent could not listen on {self.ip}: {alert.message()}")
                if self.listening and self.handle.status().is_seeding:
                    return
                await trio.sleep(0.01)


def make_content(root: Path) -> Path:
    content = root / "content"
    content.mkdir(parents=True)
    (content / "a.bin").write_bytes(os.urandom(300_000))  # several pieces
    (content / "b.bin").write_bytes(os.urandom(40_000))  # a file of one piece
    return content


def start_seeder(root: Path, version: str, *, encrypted: bool = False) -> Seeder:
    content = make_content(root)
    torrent = create_torrent(content, version=version, piece_length=65536)
    ip = loopback_address()
    settings: dict[str, Any] = {
        "listen_interfaces": f"{ip}:0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.status | lt.alert_category.error,
    }
    if encrypted:
        settings.update(out_enc_policy=lt.enc_policy.pe_forced, in_enc_policy=lt.enc_policy.pe_forced,
                        allowed_enc_level=lt.enc_level.pe_rc4)
    session = lt.session(settings)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    params.save_path = str(root)
    params.flags &= ~(lt.torrent_flags.paused | lt.torrent_flags.auto_managed)  # start now, not queued
    return Seeder(ip, session, session.add_torrent(params), parse_torrent(torrent))


@pytest.fixture(scope="module")
def seeders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Seeder]]:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    made = {name: start_seeder(tmp_path_factory.mktemp(name), version, encrypted=name == "encrypted")
            for name, version in (("v1", "v1"), ("v2", "v2"), ("hybrid", "hybrid"), ("encrypted", "v1"))}
    yield made
    for seeder in made.values():
        seeder.session.remove_torrent(seeder.handle)
    made.clear()


@pytest.mark.parametrize("name", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize("encryption", ["prefer", "off"])
async def test_libtorrent_seeder_reaches_level_3(seeders: dict[str, Seeder], name: str,
                                                 encryption: str) -> None:
    seeder = seeders[name]
    await seeder.wait_ready()
    metainfo = seeder.metainfo
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, metainfo.infohash, encryption=encryption)
    assert result.error is None and result.flagged is None, result.transcript[-3:]
    assert result.level == 3
    assert result.metadata_verified and result.metadata == metainfo.info_bytes
    assert result.client is not None and result.client.startswith("libtorrent")
    assert result.peer_id is not None and result.peer_id.startswith(b"-LT")
    assert result.have_fraction == 1.0
    assert result.piece_verified is not None
    # the cheapest verifiable piece was chosen (from bare v2 metadata only one-piece files are verifiable)
    verifiable = [i for i in range(metainfo.num_pieces) if metainfo.piece_hashes
                  or any(i in metainfo.file_pieces(f) and f.length <= metainfo.piece_length
                         for f in metainfo.files if f.length and not f.pad)]
    sizes = {i: metainfo.piece_size(i) for i in verifiable}
    assert sizes[result.piece_verified] == min(sizes.values())
    algorithm = "sha256-merkle" if metainfo.version.value == "v2" else "sha1"
    assert result.piece_hash_algorithm == algorithm
    if algorithm == "sha1":
        assert bytes.fromhex(result.piece_hash or "") == metainfo.piece_hashes[result.piece_verified]
    assert result.encryption == ("none" if encryption == "off" else "mse-plaintext")


async def test_v2_piece_of_a_multi_piece_file_with_piece_layers(seeders: dict[str, Seeder]) -> None:
    seeder = seeders["v2"]
    await seeder.wait_ready()
    metainfo = seeder.metainfo  # from the .torrent: it has the piece layers
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, metainfo.infohash, metainfo=metainfo, piece=1,
                                  encryption="off")
    assert result.level == 3 and result.piece_verified == 1
    a_bin = next(f for f in metainfo.files if f.path[-1] == "a.bin")
    layer = metainfo.v2_piece_hashes(a_bin)
    assert layer is not None and result.piece_hash == layer[1].hex()


@pytest.mark.parametrize("given", ["bare-info", "bep9"])
async def test_v2_piece_layer_fetched_by_hash_requests(seeders: dict[str, Seeder], given: str) -> None:
    """Issue 10: from the info dict alone (BEP 9: no piece layers) a piece of a multi-piece v2 file is
    verified after BEP 52 hash requests fetch its file's layer; the layer equals the .torrent's."""
    seeder = seeders["v2"]
    await seeder.wait_ready()
    full = seeder.metainfo
    a_bin = next(f for f in full.files if f.path[-1] == "a.bin")
    bare = parse_info(full.info_bytes) if given == "bare-info" else None
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, full.infohash, metainfo=bare, piece=1, encryption="off")
    assert result.error is None and result.flagged is None, result.transcript[-4:]
    assert result.level == 3 and result.piece_verified == 1 and result.piece_hash_algorithm == "sha256-merkle"
    assert a_bin.pieces_root is not None
    assert result.piece_layers == {a_bin.pieces_root: full.piece_layers[a_bin.pieces_root]}
    assert result.piece_hash == full.piece_layers[a_bin.pieces_root][32:64].hex()
    notes = [t for t in result.transcript if t.message == "piece_layer"]
    assert notes and notes[0].detail["hashes"] == 5
    assert [t.message for t in result.transcript if t.direction == "out"].count("hash_request") == 1


async def test_hybrid_under_its_truncated_v2_id_with_its_metainfo(seeders: dict[str, Seeder]) -> None:
    """A hybrid goes by two DHT ids (BEP 52); probing it under the v2 one with its metainfo is no misuse."""
    seeder = seeders["hybrid"]
    await seeder.wait_ready()
    v2 = seeder.metainfo.infohash_v2
    assert v2 is not None
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, v2[:20], metainfo=seeder.metainfo, encryption="off")
    assert result.error is None and result.level == 3 and result.piece_hash_algorithm == "sha1", result.transcript[-3:]


async def test_v2_full_infohash_verifies_metadata_with_sha256(seeders: dict[str, Seeder]) -> None:
    seeder = seeders["v2"]
    await seeder.wait_ready()
    v2 = seeder.metainfo.infohash_v2
    assert v2 is not None
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, v2, encryption="off", fetch_piece=False)
    assert result.metadata_verified and result.level == 2
    assert hashlib.sha256(result.metadata or b"").digest() == v2


async def test_seeder_that_requires_encryption(seeders: dict[str, Seeder]) -> None:
    seeder = seeders["encrypted"]
    await seeder.wait_ready()
    infohash = seeder.metainfo.infohash
    with trio.fail_after(60):
        required = await probe_peer(seeder.ip, seeder.port, infohash, encryption="require")
        preferred = await probe_peer(seeder.ip, seeder.port, infohash, encryption="prefer")
        plaintext = await probe_peer(seeder.ip, seeder.port, infohash, encryption="off")
    for result in (required, preferred):
        assert result.level == 3 and result.metadata_verified and result.piece_verified is not None
        assert result.encrypted and result.encryption == "rc4"
    assert plaintext.level == 0 and plaintext.error is not None


async def test_handshake_and_bitfield_only(seeders: dict[str, Seeder]) -> None:
    seeder = seeders["hybrid"]
    await seeder.wait_ready()
    with trio.fail_after(60):
        result = await probe_peer(seeder.ip, seeder.port, seeder.metainfo.infohash, fetch_metadata=False,
                                  encryption="off")
    assert result.level == 2 and result.have_fraction == 1.0
    assert not result.metadata_verified and result.piece_verified is None
    assert result.bytes_received < 1000


def test_cli_probe_peer_json(seeders: dict[str, Seeder]) -> None:
    import json

    from click.testing import CliRunner

    import p2pwatch.cli.probe_peer  # noqa: F401 - registers ``probe peer``
    from p2pwatch.cli import main

    seeder = seeders["v1"]
    trio.run(seeder.wait_ready)
    address = f"{seeder.ip}:{seeder.port}"
    infohash = seeder.metainfo.infohash.hex()
    runner = CliRunner()
    args = ["probe", "peer", address, infohash, "--allow-local"]
    result = runner.invoke(main, [*args, "--json", "--piece", "0"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["level"] == 3 and document["piece_verified"] == 0 and document["metadata_verified"]
    assert document["client"].startswith("libtorrent") and document["transcript"]
    human = runner.invoke(main, ["probe", "peer", address, infohash, "--allow-local", "--no-piece"])
    assert human.exit_code == 0 and "level       2 (advertised)" in human.output
    refused = runner.invoke(main, ["probe", "peer", address, infohash])  # loopback without --allow-local
    assert refused.exit_code == 2 and "--allow-local" in refused.stderr
    bad = runner.invoke(main, ["probe", "peer", address, "nothex", "--allow-local"])
    assert bad.exit_code == 2 and "not an infohash" in bad.stderr and "Traceback" not in bad.output
