"""Alembic migrations of the evidence store, run programmatically (p2pwatch.storage.db.upgrade_database)."""
