"""The published cache version as objects on S3, manifest last, LATEST after it.

    <prefix>/<version>/part-00000.jsonl.gz ...   one payload (JSON) per line, <= part_lines lines
    <prefix>/<version>/popular.json              {platform: popular payload}
    <prefix>/<version>/manifest.json             written after every part: the version is complete
    <prefix>/LATEST                              text: the version name, written after the manifest

A reader trusts a version only through its manifest (sha256 and line count per part). If any
upload fails, LATEST keeps pointing at the previous version. `client` is a boto3 S3 client
(e.g. dagster-aws `S3Resource.get_client()`); only put/get/list/delete_objects are used.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import logging
import tempfile
from collections.abc import Iterator
from typing import Any

import orjson

from homefeed.cache import CacheVersion, connect_readonly

log = logging.getLogger(__name__)

LATEST = "LATEST"
MANIFEST = "manifest.json"
POPULAR = "popular.json"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _payloads(version: CacheVersion, page: int) -> Iterator[bytes]:
    """Every payload of the version, read in rowid pages so memory stays bounded."""
    conn = connect_readonly(version.path)
    try:
        last = 0
        while rows := conn.execute("SELECT rowid, body FROM payload WHERE rowid > ? ORDER BY rowid "
                                   "LIMIT ?", (last, page)).fetchall():
            for _, body in rows:
                yield body
            last = rows[-1][0]
    finally:
        conn.close()


def _put_part(client: Any, bucket: str, key: str, lines: Iterator[bytes]) -> dict | None:
    # Spooled to a temp file, not memory: a 50k-line part is ~100 MB of JSON before gzip.
    with tempfile.TemporaryFile() as fh:
        n = 0
        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:  # mtime=0: same bytes, same sha
            for body in lines:
                gz.write(body)
                gz.write(b"\n")
                n += 1
        if n == 0:
            return None
        size, sha = fh.tell(), hashlib.sha256()
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
        fh.seek(0)
        client.put_object(Bucket=bucket, Key=key, Body=fh, ContentLength=size,
                          ContentType="application/gzip")
    return {"key": key, "lines": n, "bytes": size, "sha256": sha.hexdigest()}


def export_to_s3(client: Any, bucket: str, prefix: str, version: CacheVersion, *, keep: int = 3,
                 part_lines: int = 50_000, page: int = 2_000) -> dict:
    """Upload `version` (parts, popular, manifest), then move LATEST; keep the newest `keep`
    complete versions on S3. Returns the manifest."""
    base = _join(prefix, version.name)
    written: list[str] = []
    manifest_done = False
    try:
        parts = []
        lines = _payloads(version, page)
        for i in itertools.count():
            part = _put_part(client, bucket, f"{base}/part-{i:05d}.jsonl.gz",
                             itertools.islice(lines, part_lines))
            if part is None:
                break
            written.append(part["key"])
            parts.append(part)
        total = sum(p["lines"] for p in parts)
        if total != version.keys:
            raise RuntimeError(f"{version.name}: exported {total} payloads, the version holds {version.keys}")

        conn = connect_readonly(version.path)
        try:
            popular = {p: orjson.loads(b) for p, b in conn.execute("SELECT platform, body FROM popular")}
        finally:
            conn.close()
        pop_bytes = orjson.dumps(popular)
        client.put_object(Bucket=bucket, Key=f"{base}/{POPULAR}", Body=pop_bytes,
                          ContentType="application/json")
        written.append(f"{base}/{POPULAR}")

        manifest = {
            "version": version.name, "manifest_key": f"{base}/{MANIFEST}",
            "serve_date": version.serve_date.isoformat(),
            "model_version": version.model_version, "created_at": version.created_at.isoformat(),
            "exported_at": dt.datetime.now(dt.UTC).isoformat(), "keys": version.keys,
            "rows": version.rows, "row_ids": list(version.row_ids),
            "format": "gzip JSON lines, one payload per (user_id, platform)",
            "parts": parts,
            "popular": {"key": f"{base}/{POPULAR}", "sha256": hashlib.sha256(pop_bytes).hexdigest()},
        }
        client.put_object(Bucket=bucket, Key=f"{base}/{MANIFEST}", Body=orjson.dumps(manifest),
                          ContentType="application/json")
        manifest_done = True
        client.put_object(Bucket=bucket, Key=_join(prefix, LATEST), Body=version.name.encode(),
                          ContentType="text/plain")
    except BaseException:
        if not manifest_done:  # an incomplete version is garbage: remove what we wrote
            _delete_keys(client, bucket, written, quiet=True)
        raise
    _prune(client, bucket, prefix, keep=keep, latest=version.name)
    log.info("exported %s to s3://%s/%s (%d parts, %d keys)", version.name, bucket, base,
             len(parts), version.keys)
    return manifest


def _get(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def read_manifest(client: Any, bucket: str, prefix: str, name: str) -> dict | None:
    raw = _get(client, bucket, _join(prefix, name, MANIFEST))
    return None if raw is None else orjson.loads(raw)


def latest_s3_version(client: Any, bucket: str, prefix: str) -> dict | None:
    """The manifest LATEST points at; None if nothing (complete) was exported."""
    name = _get(client, bucket, _join(prefix, LATEST))
    return None if name is None else read_manifest(client, bucket, prefix, name.decode().strip())


def iter_s3_payloads(client: Any, bucket: str, manifest: dict) -> Iterator[bytes]:
    """Every payload line of a manifest's parts, each part checked against its sha256."""
    for part in manifest["parts"]:
        raw = _get(client, bucket, part["key"])
        if raw is None or hashlib.sha256(raw).hexdigest() != part["sha256"]:
            raise ValueError(f"part {part['key']} is missing or does not match its sha256")
        lines = gzip.decompress(raw).splitlines()
        if len(lines) != part["lines"]:
            raise ValueError(f"part {part['key']}: {len(lines)} lines, manifest says {part['lines']}")
        yield from lines


def read_s3_payload(client: Any, bucket: str, prefix: str, user_id: str, platform: str,
                    *, manifest: dict | None = None) -> bytes | None:
    """One key's payload from the LATEST (or given) version by scanning its parts: for tests
    and spot checks, not for serving. None if the key is absent."""
    manifest = manifest or latest_s3_version(client, bucket, prefix)
    if manifest is None:
        return None
    # payloads start with {"user_id":...,"platform":...,  (compact JSON, fixed key order)
    head = orjson.dumps({"user_id": user_id, "platform": platform})[:-1] + b","
    return next((line for line in iter_s3_payloads(client, bucket, manifest) if line.startswith(head)), None)


def _version_names(client: Any, bucket: str, prefix: str) -> list[str]:
    root = _join(prefix) + "/" if _join(prefix) else ""
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root, Delimiter="/"):
        names += [cp["Prefix"][len(root):].rstrip("/") for cp in page.get("CommonPrefixes", [])]
    return [n for n in names if n.startswith("v")]


def _delete_keys(client: Any, bucket: str, keys: list[str], *, quiet: bool = False) -> None:
    for i in range(0, len(keys), 1000):
        try:
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                         "Quiet": True})
        except Exception:  # best effort on the failure path; the original error matters more
            if not quiet:
                raise
            log.warning("could not delete partial upload under s3://%s", bucket, exc_info=True)


def _prune(client: Any, bucket: str, prefix: str, *, keep: int, latest: str) -> None:
    """Keep the newest `keep` complete versions (and LATEST's); drop the rest, incomplete ones too."""
    manifests = {n: read_manifest(client, bucket, prefix, n) for n in _version_names(client, bucket, prefix)}
    complete = sorted((n for n, m in manifests.items() if m), reverse=True,
                      key=lambda n: (dt.datetime.fromisoformat(manifests[n]["created_at"]), n))
    keep_names = set(complete[:keep]) | {latest}
    for name in manifests:
        if name in keep_names:
            continue
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=_join(prefix, name) + "/") for o in page.get("Contents", [])]
        _delete_keys(client, bucket, keys)
        log.info("pruned s3://%s/%s", bucket, _join(prefix, name))
