"""The offline demo swarm: synthetic content and a loopback swarm of real libtorrent sessions.

Used by ``p2pwatch demo``, by the end-to-end tests (as a fixture) and by ``scripts/demo_swarm.py``.
Content is generated with ffmpeg's lavfi sources (never real media). The swarm, on 127.0.x.y addresses:

* ``exact``: the registered video as a single-file v1 torrent, seeded by two sessions;
* ``renamed``: the same bytes renamed, behind a small text file in a multi-file v1 torrent (unaligned);
* ``reencoded``: the video scaled down and re-encoded at a lower quality;
* ``decoy``: a different video whose name carries the case keyword;
* ``hybrid``: the registered video again, as a v1+v2 hybrid torrent made by libtorrent (BEP 52): found on the
  DHT under its v1 or its truncated v2 id, its metadata comes over BEP 9 without ``piece layers``, it is matched
  by its pieces root and exported as the info dict alone;
* ``v2``: the registered video again, as a v2-only torrent (BEP 52): every piece needs the piece layer BEP 9
  does not carry, so the monitor's probes fetch it by hash requests before they can prove a seeder, and the
  bundle carries it;
* a listed-but-absent peer: an address announced into the DHT for ``exact`` where nothing listens.

Eight libtorrent sessions run the DHT; the monitor finds the torrents by BEP 51 crawling alone.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pwatch.dht.node import DHTConfig, open_dht_node
from p2pwatch.errors import MediaError
from p2pwatch.match.media import ffmpeg_exe
from p2pwatch.testswarm.localswarm import LocalSwarm, SwarmSession, create_torrent
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

KEYWORD = "Kim Jiyoung"
PIECE = 64 * 1024


def _ffmpeg(*args: str) -> None:
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MediaError(f"ffmpeg failed: {done.stderr[-400:]}")


def make_video(out: Path, sources: list[str], seconds: int = 6, size: str = "480x270") -> Path:
    """Concatenate lavfi sources (one segment each, so there are scene changes) into an H.264 MP4.

    Each source spec holds ``{s}`` where its size and rate options go (before any filter after a comma)."""
    inputs: list[str] = []
    for src in sources:
        inputs += ["-f", "lavfi", "-t", str(seconds), "-i", src.format(s=f"s={size}:r=15")]
    graph = "".join(f"[{i}:v]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=1:a=0[v]"
    _ffmpeg(*inputs, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "23", "-g", "30", "-pix_fmt", "yuv420p", str(out))
    return out


def reencode(src: Path, out: Path, size: str = "320x180", crf: int = 32) -> Path:
    w, h = size.split("x")
    _ffmpeg("-i", str(src), "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
            "-g", "30", str(out))
    return out


@dataclass
class DemoContent:
    root: Path
    registered: Path
    keyword: str = KEYWORD

    @classmethod
    def generate(cls, root: Path) -> DemoContent:
        root.mkdir(parents=True, exist_ok=True)
        original = make_video(root / "original.mp4", [
            "mandelbrot=start_scale=0.3:end_scale=0.01:{s}", "life=seed=7:ratio=0.3:mold=10:{s},boxblur=2",
            "gradients=seed=3:speed=0.05:{s}"])
        (root / "exact").mkdir(exist_ok=True)
        (root / "exact" / "clip_0412.mp4").write_bytes(original.read_bytes())
        renamed = root / "renamed" / "Holiday pack"
        renamed.mkdir(parents=True, exist_ok=True)
        (renamed / "a_readme.txt").write_text("photos and a video from the trip\n" * 40)
        (renamed / "b_beach.mp4").write_bytes(original.read_bytes())
        (root / "reencoded").mkdir(exist_ok=True)
        reencode(original, root / "reencoded" / "small_version.mp4")
        (root / "hybrid").mkdir(exist_ok=True)
        (root / "hybrid" / "clip_0412_hd.mp4").write_bytes(original.read_bytes())
        (root / "v2").mkdir(exist_ok=True)
        (root / "v2" / "clip_0412_v2.mp4").write_bytes(original.read_bytes())
        (root / "decoy").mkdir(exist_ok=True)
        make_video(root / "decoy" / "kim_jiyoung_fancam.mp4", [
            "cellauto=rule=110:seed=5:{s},boxblur=2", "zoneplate=kt=8:kx2=8:ky2=8:{s},boxblur=2"])
        return cls(root, original)


@dataclass
class DemoTorrent:
    label: str
    metainfo: Metainfo
    raw: bytes
    expected: str | None  # expected match method, None for a decoy
    seeders: list[SwarmSession] = field(default_factory=list)

    @property
    def infohash(self) -> str:
        return self.metainfo.infohash.hex()

    @property
    def dht_ids(self) -> set[str]:
        """Every id the torrent goes by on the DHT (a hybrid's v1 and truncated v2 ids)."""
        return {h[:20].hex() for h in (self.metainfo.infohash_v1, self.metainfo.infohash_v2) if h}


def demo_torrents(content: DemoContent) -> list[DemoTorrent]:
    root = content.root
    specs = [
        ("exact", make_v1_torrent("clip_0412.mp4", [("clip_0412.mp4", root / "exact" / "clip_0412.mp4")],
                                  piece_length=PIECE, single_file=True), "exact-metadata"),
        ("renamed", make_v1_torrent("Holiday pack", [
            ("a_readme.txt", root / "renamed" / "Holiday pack" / "a_readme.txt"),
            ("b_beach.mp4", root / "renamed" / "Holiday pack" / "b_beach.mp4")], piece_length=PIECE), "exact-piece"),
        ("reencoded", make_v1_torrent("small_version.mp4", [
            ("small_version.mp4", root / "reencoded" / "small_version.mp4")], piece_length=PIECE, single_file=True),
         "perceptual"),
        ("decoy", make_v1_torrent("kim_jiyoung_fancam.mp4", [
            ("kim_jiyoung_fancam.mp4", root / "decoy" / "kim_jiyoung_fancam.mp4")], piece_length=PIECE,
            single_file=True), None),
        ("hybrid", create_torrent(root / "hybrid" / "clip_0412_hd.mp4", version="hybrid", piece_length=PIECE),
         "exact-metadata"),
        ("v2", create_torrent(root / "v2" / "clip_0412_v2.mp4", version="v2", piece_length=PIECE), "exact-metadata"),
    ]
    return [DemoTorrent(label, parse_torrent(raw), raw, expected) for label, raw, expected in specs]


SAVE_PATHS = {"exact": "exact", "renamed": "renamed", "reencoded": "reencoded", "decoy": "decoy", "hybrid": "hybrid",
              "v2": "v2"}
SEEDERS = {"exact": [0, 1], "renamed": [2], "reencoded": [3], "decoy": [4], "hybrid": [1], "v2": [2]}


@dataclass
class DemoSwarm:
    swarm: LocalSwarm
    sessions: list[SwarmSession]
    torrents: list[DemoTorrent]
    absent_peer: tuple[str, int] | None = None

    @property
    def bootstrap(self) -> list[str]:
        return [f"{s.ip}:{s.port}" for s in self.sessions[5:8]]


def start_demo_swarm(content: DemoContent, *, prefix: str = "127.0.44", nodes: int = 8) -> DemoSwarm:
    """Start the sessions, seed, wire the DHT and let the seeders announce (blocking; call from a thread)."""
    swarm = LocalSwarm(content.root)
    sessions = [swarm.start_session(f"{prefix}.{i}") for i in range(2, 2 + nodes)]
    torrents = demo_torrents(content)
    for torrent in torrents:
        for index in SEEDERS[torrent.label]:
            swarm.seed(sessions[index], torrent.raw, content.root / SAVE_PATHS[torrent.label])
            torrent.seeders.append(sessions[index])
    swarm.start_dht(min_nodes=4)
    return DemoSwarm(swarm, sessions, torrents)


async def announce_absent_peer(demo: DemoSwarm, ip: str, port: int) -> None:
    """Announce ``ip:port`` (where nothing listens) for the exact copy: a listed-but-absent address."""
    exact = next(t for t in demo.torrents if t.label == "exact")
    bootstrap = tuple((s.ip, s.port) for s in demo.sessions[:3])
    config = DHTConfig(bind_host=ip, bind_port=0, bootstrap=bootstrap, allow_local=True, query_timeout=2.0,
                       maintenance_interval=3600)
    async with open_dht_node(config) as node:
        await node.announce_peer(exact.metainfo.infohash, port=port, implied_port=False)
    demo.absent_peer = (ip, port)


def stop_demo_swarm(demo: DemoSwarm) -> None:
    demo.swarm.close()


async def open_demo_swarm(content: DemoContent, **kw: object) -> DemoSwarm:
    return await trio.to_thread.run_sync(lambda: start_demo_swarm(content, **kw))  # type: ignore[arg-type]
