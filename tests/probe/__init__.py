"""Tests of p2pwatch/probe/."""
