"""The cached export the fitness app reads: per (user_id, platform) the home-screen rows.

- `homefeed.cache`: versioned on-disk SQLite cache, atomic publish, reader, rollback (CLI).
- `homefeed.payload`: input validation and the JSON payload shape.
- `homefeed.synthetic`: synthetic frames in the batch-inference shape (tests, benchmark).
- `homefeed.s3_export`: the same export as JSONL parts on S3, manifest last.
- `homefeed.service`: the read service (Starlette), `python -m homefeed.service`.

No Dagster, torch or `ml` imports: the assets call in, never the other way round. Nothing is
imported here so that `python -m homefeed.<module>` runs each module once.
"""
