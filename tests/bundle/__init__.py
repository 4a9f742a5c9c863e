"""Tests of p2pwatch/bundle/."""
