"""File access for a local folder or an S3 prefix through one pyarrow filesystem."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a folder path or s3:// URI."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {
            "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        }
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or ep.path
            kwargs["scheme"] = ep.scheme or "https"
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def list_files(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """All files under `path` (recursively); an absent folder is empty, not an error."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return []
    sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return sorted(
        (i for i in fs.get_file_info(sel) if i.type == pafs.FileType.File),
        key=lambda i: i.path,
    )
