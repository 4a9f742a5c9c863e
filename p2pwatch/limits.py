"""Named limits, in one place, checked before anything is allocated (DESIGN.md, house style)."""

from __future__ import annotations

#: Largest UDP datagram we read (KRPC, UDP trackers). Bigger datagrams are truncated by the OS read.
MAX_DATAGRAM = 2048
#: Largest .torrent file we parse.
MAX_TORRENT_FILE = 64 * 1024 * 1024
#: Largest info dict (metadata) we accept from BEP 9 or parse at all.
MAX_METADATA_SIZE = 16 * 1024 * 1024
#: Deepest nesting of bencoded lists/dicts. File trees of v2 torrents are deep, KRPC is shallow.
MAX_BENCODE_DEPTH = 128
#: Longest single bencoded string (the v1 ``pieces`` string can be large).
MAX_BENCODE_STRING = 48 * 1024 * 1024
#: Deepest nesting accepted in a KRPC message.
MAX_KRPC_DEPTH = 8
#: Most files in one torrent.
MAX_TORRENT_FILES = 200_000
#: Most peers kept per infohash by our DHT node (announces it receives).
MAX_PEERS_PER_INFOHASH = 100
#: Most infohashes our DHT node stores announces for.
MAX_STORED_INFOHASHES = 5_000
#: Most DHT queries in flight from one node.
MAX_OUTSTANDING_QUERIES = 256
#: Most samples accepted in one BEP 51 reply (a 1500-byte datagram holds about 70).
MAX_SAMPLES_PER_REPLY = 1024
#: Longest magnet URI accepted.
MAX_MAGNET_LENGTH = 64 * 1024
