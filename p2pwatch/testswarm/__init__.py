"""Loopback swarms of real BitTorrent software (libtorrent seeders and DHT nodes on 127.0.x.y) that
``p2pwatch demo`` runs and the tests reuse. Nothing here is used against the real network.
"""
