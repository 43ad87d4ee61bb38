"""The S3 export against a real S3 HTTP endpoint on loopback (moto server): parts, manifest
last, LATEST after it, pruning, and a failed upload that leaves LATEST where it was."""

from __future__ import annotations

import gzip
import hashlib

import boto3
import orjson
import pytest

from homefeed.cache import CacheReader, CacheStore, connect_readonly
from homefeed.s3_export import (
    export_to_s3,
    iter_s3_payloads,
    latest_s3_version,
    read_s3_payload,
    split_s3_uri,
)


class Recording:
    """A boto3 client that records put keys in order and can fail one put."""

    def __init__(self, client, fail_on: str | None = None):
        self._client, self.fail_on, self.puts = client, fail_on, []

    def put_object(self, **kw):
        if self.fail_on and kw["Key"].endswith(self.fail_on):
            raise ConnectionError(f"simulated failure putting {kw['Key']}")
        self.puts.append(kw["Key"])
        return self._client.put_object(**kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture
def s3(s3_env, s3_server):
    bucket, lake = split_s3_uri(s3_env)
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1"), bucket, f"{lake}/homefeed"


def _version(tmp_path, make_frames, publish, seed=1, n=60):
    return publish(CacheStore(tmp_path, keep=5), make_frames(n, seed=seed, model_version=seed), model_version=seed)


def _stored(version, user_id: str, platform: str) -> bytes | None:
    """One payload as the version's own cache file holds it."""
    conn = connect_readonly(version.path)
    try:
        row = conn.execute("SELECT body FROM payload WHERE user_id = ? AND platform = ?",
                           (user_id, platform)).fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


def _stored_all(version) -> set[bytes]:
    conn = connect_readonly(version.path)
    try:
        return {bytes(b) for (b,) in conn.execute("SELECT body FROM payload")}
    finally:
        conn.close()


def _keys(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def test_export_parts_manifest_then_latest(tmp_path, make_frames, publish, s3):
    client, bucket, prefix = s3
    v = _version(tmp_path, make_frames, publish, n=60)  # 120 keys -> parts of 50, 50, 20
    rec = Recording(client)
    manifest = export_to_s3(rec, bucket, prefix, v, part_lines=50, page=7)

    base = f"{prefix}/{v.name}"
    assert rec.puts == [f"{base}/part-00000.jsonl.gz", f"{base}/part-00001.jsonl.gz",
                        f"{base}/part-00002.jsonl.gz", f"{base}/popular.json", f"{base}/manifest.json",
                        f"{prefix}/LATEST"]
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/LATEST")["Body"].read().decode() == v.name
    assert latest_s3_version(client, bucket, prefix) == orjson.loads(orjson.dumps(manifest))
    assert (manifest["version"], manifest["keys"], manifest["model_version"]) == (v.name, 120, 1)
    assert manifest["manifest_key"] == f"{base}/manifest.json"
    assert [p["lines"] for p in manifest["parts"]] == [50, 50, 20]
    for part in manifest["parts"]:
        raw = client.get_object(Bucket=bucket, Key=part["key"])["Body"].read()
        assert hashlib.sha256(raw).hexdigest() == part["sha256"] and len(raw) == part["bytes"]
        assert len(gzip.decompress(raw).splitlines()) == part["lines"]

    conn = connect_readonly(v.path)
    stored = {bytes(b) for (b,) in conn.execute("SELECT body FROM payload")}
    popular = {p: orjson.loads(b) for p, b in conn.execute("SELECT platform, body FROM popular")}
    conn.close()
    assert set(iter_s3_payloads(client, bucket, manifest)) == stored
    assert read_s3_payload(client, bucket, prefix, "u0000042", "app") == CacheReader(tmp_path).get("u0000042", "app")
    assert read_s3_payload(client, bucket, prefix, "u9999999", "app") is None
    assert orjson.loads(client.get_object(Bucket=bucket, Key=f"{base}/popular.json")["Body"].read()) == popular


def test_tampered_part_is_refused(tmp_path, make_frames, publish, s3):
    client, bucket, prefix = s3
    manifest = export_to_s3(client, bucket, prefix, _version(tmp_path, make_frames, publish, n=5))
    key = manifest["parts"][0]["key"]
    client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"{}\n"))
    with pytest.raises(ValueError, match="does not match its sha256"):
        list(iter_s3_payloads(client, bucket, manifest))


def test_keeps_newest_versions_on_s3(tmp_path, make_frames, publish, s3):
    client, bucket, prefix = s3
    versions = [_version(tmp_path, make_frames, publish, seed=s, n=5) for s in (1, 2, 3)]
    for v in versions:
        export_to_s3(client, bucket, prefix, v, keep=2)
    names = {k.split("/")[-2] for k in _keys(client, bucket, prefix) if k.count("/") > prefix.count("/") + 1}
    assert names == {versions[1].name, versions[2].name}
    assert latest_s3_version(client, bucket, prefix)["version"] == versions[2].name


def test_failed_upload_leaves_latest_at_previous(tmp_path, make_frames, publish, s3):
    client, bucket, prefix = s3
    a = _version(tmp_path, make_frames, publish, seed=1, n=5)
    export_to_s3(client, bucket, prefix, a)
    b = _version(tmp_path, make_frames, publish, seed=2, n=5)
    with pytest.raises(ConnectionError, match="manifest.json"):
        export_to_s3(Recording(client, fail_on="manifest.json"), bucket, prefix, b)
    assert latest_s3_version(client, bucket, prefix)["version"] == a.name
    assert _keys(client, bucket, f"{prefix}/{b.name}") == []  # the incomplete version was removed
    # readers still get version A, every payload of it, as A's cache holds them (not B's)
    a_bike, b_bike = (_stored(v, "u0000001", "bike") for v in (a, b))
    assert a_bike is not None and a_bike != b_bike
    assert read_s3_payload(client, bucket, prefix, "u0000001", "bike") == a_bike
    assert set(iter_s3_payloads(client, bucket, latest_s3_version(client, bucket, prefix))) == _stored_all(a)
    # the next export of the same version succeeds and moves LATEST
    export_to_s3(client, bucket, prefix, b)
    assert latest_s3_version(client, bucket, prefix)["version"] == b.name
