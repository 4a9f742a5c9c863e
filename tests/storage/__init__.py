"""Tests of p2pwatch/storage/."""
