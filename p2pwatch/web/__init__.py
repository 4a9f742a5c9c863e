"""The investigators' web app (issue 14): accounts, the ASGI app, its pages and the ``p2pwatch web`` server.

Stage in the flow: an outer layer like the CLI. Pages call the same functions of ``investigate``, ``storage``,
``bundle`` and ``match`` that the CLI calls, and only render their results.
"""
