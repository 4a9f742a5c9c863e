"""Tests of p2pwatch/cli/."""
