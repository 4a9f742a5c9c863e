"""The evidence store: SQLAlchemy models, Alembic migrations, hash chains, the one writer (docs/storage.md).

Modules: ``chain`` (hash definitions, standard library only), ``models``, ``db`` (URLs, engines, schema
check, migrations), ``ledger`` (appending to the chains), ``reading`` (streaming and verifying them),
``writer`` (the trio writer task), ``claims`` (watch-list work claiming), ``retention`` (address purge),
``state`` (key/value state). This package imports nothing itself, so ``p2pwatch.storage.chain`` can be used
without SQLAlchemy.
"""
