"""``p2pwatch probe peer HOST:PORT INFOHASH [--piece N]`` (docs/CLI.md).

Handshake, bitfield, metadata (BEP 9, verified against the infohash) and one verified piece from that single
peer; prints the level reached (DESIGN.md evidence levels) and the transcript it rests on. ``--timeout T``
bounds the metadata and piece steps; connect and handshake use ``min(5, T)``, silence ``min(10, T)``.
``--pex-wait S`` keeps the connection up to S seconds after the peer's extended handshake for a BEP 11 ut_pex
message; the peers it lists are shown (claims, level 0). The command exits 0 whenever the probe ran, whatever
the peer did (the result says it); 2 for usage errors.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Any

import click
import trio

from p2pwatch import netguard
from p2pwatch.cli.options import (
    SOURCE_ADDRESS_REMEDY,
    NetworkOptions,
    emit_json,
    explain_bind,
    handle_errors,
    network_options,
    parse_host_port,
)
from p2pwatch.cli.probe import probe
from p2pwatch.endpoints import format_addr
from p2pwatch.errors import ConfigError, P2PWatchError
from p2pwatch.netguard import is_acceptable_remote
from p2pwatch.probe.peer_probe import ProbeResult, ProbeTimeouts, probe_peer
from p2pwatch.torrent.magnet import parse_infohash, parse_magnet
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent

#: What the --bind address is for here, in a BindError.
PEER_SOCKET_PURPOSE = "connections to the peer"
LEVEL_NAMES = {0: "listed", 1: "connected", 2: "advertised", 3: "served", 4: "served-whole"}


def _infohash(text: str) -> bytes:
    """The v1 infohash when known (20 bytes), else the full v2 one (32 bytes: SHA-256 metadata check)."""
    try:
        hashes = parse_magnet(text).infohash if text.startswith("magnet:") else parse_infohash(text)
    except P2PWatchError as exc:
        raise ConfigError(f"{text!r} is not an infohash or magnet: {exc}") from None
    value = hashes.v1 if hashes.v1 is not None else hashes.v2
    assert value is not None
    return value


def _peer(text: str, allow_local: bool) -> tuple[str, int]:
    host, port = parse_host_port(text, what="HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"peer {host!r} must be an IP address (no DNS names): give IP:PORT") from None
    if not 0 < port < 65536:
        raise ConfigError(f"peer port {port} must be 1..65535")
    if not is_acceptable_remote(host, allow_local):
        raise ConfigError(f"{host} is a loopback/private address; pass --allow-local to probe it")
    return host, port


def timeouts_for(total: float, pex: float = 0.0) -> ProbeTimeouts:
    if total <= 0:
        raise ConfigError("--timeout must be positive")
    return ProbeTimeouts(connect=min(5.0, total), handshake=min(5.0, total), metadata=total, piece=total,
                         idle=min(10.0, total), pex=pex)


def human_text(result: ProbeResult) -> str:
    """What ``probe peer`` prints without ``--json``: the level reached, its evidence, the PEX peers listed."""
    lines = [
        f"peer        {format_addr((result.ip, result.port))}",
        f"level       {result.level} ({LEVEL_NAMES[result.level]})",
        f"client      {result.client or '-'}",
        f"peer id     {result.peer_id.hex() if result.peer_id else '-'}",
        f"encryption  {result.encryption}",
        f"have        {'-' if result.have_fraction is None else f'{result.have_fraction:.1%}'}",
        f"metadata    {'verified' if result.metadata_verified else 'not verified'}",
        "piece       " + (f"{result.piece_verified} verified ({result.piece_hash_algorithm} "
                          f"{result.piece_hash})" if result.piece_verified is not None else "none verified"),
        f"bytes       {result.bytes_received} in, {result.bytes_sent} out",
    ]
    if result.pex_peers:
        shown = ", ".join(format_addr((p.ip, p.port)) for p in result.pex_peers[:5])
        more = f" and {len(result.pex_peers) - 5} more" if len(result.pex_peers) > 5 else ""
        lines.append(f"pex         {len(result.pex_peers)} peers listed (BEP 11): {shown}{more}")
    if result.flagged:
        lines.append(f"FLAGGED     {result.flagged}")
    if result.error:
        lines.append(f"error       {result.error}")
    return "\n".join(lines)


@click.command("peer")
@click.argument("address", metavar="HOST:PORT")
@click.argument("infohash")
@click.option("--piece", type=click.IntRange(min=0), default=None,
              help="verify this piece (default: the smallest verifiable one the peer has)")
@click.option("--no-piece", is_flag=True, help="stop after the metadata; fetch no piece")
@click.option("--no-metadata", is_flag=True, help="handshake and bitfield only")
@click.option("--torrent", "torrent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help=".torrent of the infohash (no metadata fetch; v2 piece layers)")
@click.option("--encryption", type=click.Choice(["off", "prefer", "require"]), default="prefer",
              show_default=True, help="MSE/PE; 'prefer' falls back to plaintext if the peer lacks MSE")
@click.option("--pex-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="seconds to wait for a BEP 11 ut_pex message after the extended handshake")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@network_options
@handle_errors
def peer(address: str, infohash: str, piece: int | None, no_piece: bool, no_metadata: bool,
         torrent_file: Path | None, encryption: str, pex_wait: float, as_json: bool, net: NetworkOptions) -> None:
    """Probe one peer: handshake, bitfield, metadata and a verified piece; print the level it reached."""
    host, port = _peer(address, net.allow_local)
    wanted = _infohash(infohash)
    metainfo: Metainfo | None = None
    if torrent_file is not None:
        metainfo = parse_torrent(torrent_file.read_bytes(), require_layers=False)
        if wanted not in (metainfo.infohash_v1, metainfo.infohash_v2):
            raise ConfigError(f"{torrent_file} is not the torrent of {infohash}")
        wanted = metainfo.infohash
    local = parse_host_port(net.bind, default_port=0, what="--bind")[0] if net.bind else None
    if local is not None:
        with explain_bind({PEER_SOCKET_PURPOSE: SOURCE_ADDRESS_REMEDY}):
            netguard.check_local_address(local, purpose=PEER_SOCKET_PURPOSE)
    kwargs: dict[str, Any] = dict(metainfo=metainfo, fetch_metadata=not no_metadata, piece=piece,
                                  fetch_piece=not no_piece, timeouts=timeouts_for(net.timeout, pex_wait),
                                  encryption=encryption, local_address=local)
    result = trio.run(functools.partial(probe_peer, host, port, wanted, **kwargs))
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(human_text(result))


probe.add_command(peer)
