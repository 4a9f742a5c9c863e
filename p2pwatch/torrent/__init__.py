"""The torrent format: bencoding, metainfo (v1, v2 and hybrid, BEP 3/52), file lists, magnet links (BEP 9),
merkle trees (BEP 52) and the torrent maker.

Place in the flow (docs/ARCHITECTURE.md): every stage reads torrents through this package; it does no I/O.
"""
