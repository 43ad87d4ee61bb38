"""Storage helpers of the lakehouse: settings, Delta I/O, the landing contract, bronze ingest.

Plain Python (no Dagster imports) so that `assets/` can use it and it can be tested alone.
"""
