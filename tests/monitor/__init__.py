"""Tests of p2pwatch/monitor/."""
