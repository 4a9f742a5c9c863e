"""Tests of p2pwatch/match/."""
