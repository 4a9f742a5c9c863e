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
#: Longest KRPC transaction id accepted (BEP 5 suggests 2 bytes; some clients use 4 or 8).
MAX_KRPC_TRANSACTION_ID = 16
#: Longest get_peers/announce_peer write token accepted (libtorrent sends 4 bytes, others up to 20).
MAX_KRPC_TOKEN = 64
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

# --- peer wire (BEP 3/6/9/10/52), checked by p2pwatch.probe.wire before a message body is buffered ---
#: Largest block we request, and the largest ``piece`` payload we accept (BEP 3 practice: 16 KiB).
PEER_BLOCK_SIZE = 16 * 1024
#: Most pieces a torrent can have (a v1 ``pieces`` string within MAX_METADATA_SIZE holds this many).
MAX_PIECES = MAX_METADATA_SIZE // 20
#: Largest piece we download and hash in memory.
MAX_PIECE_LENGTH = 64 * 1024 * 1024
#: Largest BEP 10 extended message (an ut_metadata data message is a small dict plus a 16 KiB block).
MAX_EXTENDED_MESSAGE = 64 * 1024
#: Largest message of a type we do not know (its payload is skipped).
MAX_UNKNOWN_MESSAGE = 64 * 1024
#: Largest BEP 52 ``hashes`` reply (header plus 512 hashes of 32 bytes).
MAX_HASHES_MESSAGE = 49 + 512 * 32
#: Most added (and, separately, dropped) contacts kept from one BEP 11 ut_pex message (BEP 11: at most 50
#: except the first message; libtorrent's first message lists up to 100).
MAX_PEX_PEERS_PER_MESSAGE = 200
#: Most contacts kept from one peer's ut_pex messages over one connection.
MAX_PEX_PEERS_PER_PEER = 500
#: Most ut_pex messages decoded from one connection (BEP 11 allows one a minute; more are ignored).
MAX_PEX_MESSAGES_PER_PEER = 16
#: Most PEX-listed peers one reporting peer may contribute to one round of probe candidates.
MAX_PEX_CANDIDATES_PER_REPORTER = 10
#: Longest padding in the MSE/PE handshake (PadA..PadD).
MSE_MAX_PAD = 512
#: Most infohashes in one UDP tracker scrape packet (BEP 15: "up to about 74").
MAX_UDP_SCRAPE = 74
#: Most infohashes in one HTTP scrape request (opentracker answers at most 64 per request).
MAX_HTTP_SCRAPE = 64
#: Largest HTTP tracker response body we read, before and after gzip decoding.
MAX_TRACKER_RESPONSE = 1024 * 1024
#: Largest HTTP response header block we read from a tracker.
MAX_HTTP_HEADER = 16 * 1024
#: Most HTTP redirects followed for one tracker request.
MAX_HTTP_REDIRECTS = 3
#: Most peers accepted from one tracker reply (a UDP datagram holds far fewer).
MAX_TRACKER_PEERS = 10_000
#: Largest ``piece length`` a torrent may declare (1 GiB; real torrents stay well below). Parsing accepts
#: it; downloading a piece is bounded separately by MAX_PIECE_LENGTH.
MAX_TORRENT_PIECE_LENGTH = 1 << 30
#: Most pieces in one torrent (libtorrent's default ``max_pieces`` is 2 Mi; a v1 ``pieces`` string is
#: further bounded by MAX_METADATA_SIZE).
MAX_TORRENT_PIECES = 1 << 22
#: Most candidate nodes one DHT lookup (traversal) keeps; farther unqueried ones are dropped first.
MAX_TRAVERSAL_CANDIDATES = 1000

# --- fingerprints and media (p2pwatch.match.fingerprint, p2pwatch.match.media) ---
#: Largest fingerprint JSON file we load (a 100 GiB file's leaf layer and piece tables fit well below).
MAX_FINGERPRINT_FILE = 512 * 1024 * 1024
#: Largest image file we decode for perceptual hashing (read whole into memory).
MAX_IMAGE_FILE = 256 * 1024 * 1024
#: Most pixels in an image we decode (Pillow's decompression-bomb guard is set to this).
MAX_IMAGE_PIXELS = 100_000_000
#: Most frame hashes taken from one video (half of them at a steady rate, the rest at scene changes).
MAX_VIDEO_FRAMES = 8000
#: Seconds one ffmpeg run may take before it is killed (a hostile file must not hang the matcher).
MEDIA_DECODE_TIMEOUT = 1800.0
#: Largest line (bytes) of an imported hash list.
MAX_HASH_LIST_LINE = 64 * 1024
