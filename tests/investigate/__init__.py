"""Tests of p2pwatch/investigate/."""
