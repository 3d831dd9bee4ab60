"""Ray jobs over the store (backfill, scoring, export) and the ``seqstore`` CLI.

Importing this package does not import Ray; each job imports it when it runs.
"""

__all__: list[str] = []
