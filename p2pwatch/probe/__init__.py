"""Probes that turn claims into evidence: trackers (BEP 3/15/48), the peer wire (BEP 3/6/9/10)."""
