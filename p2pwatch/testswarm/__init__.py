"""Loopback swarms of real BitTorrent software (libtorrent seeders and DHT nodes on 127.0.x.y) that
``p2pwatch demo`` runs and the tests reuse, and synthetic media (:mod:`p2pwatch.testswarm.media`, ffmpeg lavfi
sources) that the tests and the match/triage benchmarks share. Nothing here is used against the real network.
"""
