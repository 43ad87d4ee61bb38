"""The landing zone can be an S3 prefix (a real S3 HTTP endpoint on loopback: moto server)."""

import pytest

from simulator import generate
from simulator.export import resolve
from simulator.report import report

moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3_endpoint(monkeypatch):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    yield
    server.stop()


def test_generate_and_report_on_s3(s3_endpoint, tiny_cfg):
    fs, root = resolve("s3://landing-bucket/raw")
    summary = generate(tiny_cfg, "s3://landing-bucket/raw", n_days=2, log=None)
    r = report("s3://landing-bucket/raw")
    assert r["counts"]["workouts"] == summary["rows"]["workouts"] > 0
    assert r["counts"]["impressions"] == summary["rows"]["impressions"]
    info = fs.get_file_info(f"{root}/workouts/date=2026-09-02/part-0000.parquet")
    assert info.size > 0
