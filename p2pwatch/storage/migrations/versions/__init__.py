"""Migration revisions (Alembic skips this file when it loads revisions)."""
