"""The ``p2pwatch`` command line (docs/CLI.md): one module per command group, ``root`` holds the group,
``options`` the shared options and error handling. ``main`` is the console-script entry point.

Stage in the flow: the outermost layer. Every command here parses arguments, calls one function of
``investigate``, ``dht``, ``probe``, ``storage``, ``bundle`` or ``monitor``, and prints its result; no logic of
its own beyond presentation.
"""

from __future__ import annotations

from p2pwatch.cli.root import LazyGroup, main

#: command name -> (module, attribute); ``probe`` comes from ``probe_peer``, which adds ``probe peer`` to it
COMMANDS: dict[str, tuple[str, str]] = {
    "dht": ("p2pwatch.cli.dht", "dht"),
    "probe": ("p2pwatch.cli.probe_peer", "probe"),
    "fingerprint": ("p2pwatch.cli.fingerprint", "fingerprint"),
    "db": ("p2pwatch.cli.db", "db"),
    "verify": ("p2pwatch.cli.evidence", "verify"),
    "keys": ("p2pwatch.cli.evidence", "keys"),
    "case": ("p2pwatch.cli.cases", "case"),
    "register": ("p2pwatch.cli.cases", "register"),
    "watch": ("p2pwatch.cli.cases", "watch_command"),
    "matches": ("p2pwatch.cli.cases", "matches"),
    "lookup": ("p2pwatch.cli.lookup", "lookup_command"),
    "monitor": ("p2pwatch.cli.monitor", "monitor"),
    "peers": ("p2pwatch.cli.reports", "peers"),
    "timeline": ("p2pwatch.cli.reports", "timeline"),
    "export": ("p2pwatch.cli.reports", "export"),
    "demo": ("p2pwatch.cli.demo", "demo"),
    "user": ("p2pwatch.cli.users", "user"),
    "web": ("p2pwatch.cli.web", "web"),
    "unwatch": ("p2pwatch.cli.cases", "unwatch_command"),
}
assert isinstance(main, LazyGroup)
for _name, (_module, _attribute) in COMMANDS.items():
    main.add_lazy(_name, _module, _attribute)

__all__ = ["main"]
