"""p2pwatch: find, prove and attribute BitTorrent copies of registered content.

See docs/ARCHITECTURE.md for the architecture and the evidence levels.
"""

from __future__ import annotations

__version__ = "0.1.0"
