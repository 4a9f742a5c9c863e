"""Tests of p2pwatch/torrent/."""
