"""The lakehouse: where the data lives, how it gets into bronze, how it is checked and published.

- ``contract``: the landing contract (entities, columns, keys, the id grammar) and the platform's
  vocabulary, defined once;
- ``io/``: settings (one URI), the filesystem of a folder or an S3 prefix, Delta reads and
  writes, storage errors;
- ``landing/``: the app's daily exports -> bronze (day manifests, reading, row checks, ingest);
- ``mapped/``: a dataset described by a mapping file -> bronze (bring your own data);
- ``quality/``: the suites of named checks, their Great Expectations engine and failure texts,
  and the audits before a commit (write-audit-publish);
- ``publish``: dbt's marts -> gold Delta tables.

Plain Python (no Dagster imports) so that `assets/` can use it and it can be tested alone.
Run-failure remediation is operations, not storage: it lives in the top-level ``operations``.
"""
