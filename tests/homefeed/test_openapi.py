"""GET /openapi.json describes the service: real responses (personal, popular, filtered, errors,
health) validate against the schemas it serves, and one that breaks them is caught."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from homefeed.cache import CacheStore
from homefeed.service import create_app
from homefeed.synthetic import synthetic_classes, synthetic_popular, synthetic_recommendations
from tests.homefeed.data import SERVE_DATE
from tests.homefeed.test_service import call, serving


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    frames = list(synthetic_recommendations(10, k=4, seed=2, model_version=2, serve_date=SERVE_DATE))
    classes = synthetic_classes(serve_date=SERVE_DATE).slice(100)  # c00000..c00099 not in it
    CacheStore(root).publish(frames, synthetic_popular(k=5, seed=3), serve_date=SERVE_DATE,
                             model_version=2, classes=classes)
    with serving(create_app(root, refresh_s=0, max_k=20)) as base:
        status, _, body = call(f"{base}/openapi.json")
        assert status == 200
        yield base, orjson.loads(body)


def _validator(spec: dict, schema: str, method: str = "get"):
    ref = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(ref)


def _response_schema(spec: dict, path: str, status: int) -> str:
    ref = spec["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


@pytest.mark.parametrize("url, path, status", [
    ("/users/u0000001/recommendations?platform=bike", "/users/{user_id}/recommendations", 200),
    ("/users/u0000001/recommendations?platform=app&k=2&row=morning", "/users/{user_id}/recommendations", 200),
    ("/users/nobody/recommendations?platform=tread", "/users/{user_id}/recommendations", 200),
    ("/users/u0000001/recommendations?platform=moon", "/users/{user_id}/recommendations", 400),
    ("/users/u0000001/recommendations", "/users/{user_id}/recommendations", 400),
    ("/healthz", "/healthz", 200),
])
def test_real_responses_match_the_description(described, url, path, status):
    base, spec = described
    got, _, body = call(base + url)
    assert got == status
    payload = orjson.loads(body)
    _validator(spec, _response_schema(spec, path, status)).validate(payload)
    if path != "/healthz" and status == 200:
        assert {"title", "instructor", "discipline", "duration_min", "is_new"} <= set(payload["rows"][0]["items"][0])


def test_the_description_catches_a_payload_that_drifts(described):
    base, spec = described
    _, _, body = call(f"{base}/users/u0000001/recommendations?platform=bike")
    payload = orjson.loads(body)
    payload["rows"][0]["items"][0]["score"] = 925.0  # a count where a share/probability belongs
    with pytest.raises(jsonschema.ValidationError):
        _validator(spec, "Screen").validate(payload)
    assert spec["openapi"].startswith("3.1") and set(spec["paths"]) == {
        "/users/{user_id}/recommendations", "/healthz", "/openapi.json"}
