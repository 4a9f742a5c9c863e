"""Tests of p2pwatch/dht/."""
