"""The read service's OpenAPI 3.1 description, served at GET /openapi.json (hand-written:
Starlette generates none). tests/homefeed/test_openapi.py validates real responses against it,
so a change of the payload (homefeed.payload) that is not made here too fails there."""

from __future__ import annotations

from homefeed.payload import CLASS_FIELDS

_NULLABLE_STR = {"type": ["string", "null"]}
_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                         "path": {"type": "string"}}}
_ITEM = {
    "type": "object", "required": ["rank", "class_id", "score"],
    "properties": {
        "rank": {"type": "integer", "minimum": 1},
        "class_id": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 1,
                  "description": "personal rows: the model's P(take); the popular row: the class's "
                                 "share of the platform's workouts over the popularity window"},
        "title": {**_NULLABLE_STR, "description": "null: the class is not in the catalogue"},
        "instructor": {**_NULLABLE_STR, "description": "the instructor's name"},
        "discipline": _NULLABLE_STR,
        "duration_min": {"type": ["integer", "null"]},
        "is_new": {"type": ["boolean", "null"],
                   "description": "released in the week before serve_date (null: unknown)"},
    },
    "description": f"Card fields ({', '.join(CLASS_FIELDS)}, is_new) are those the dataset's "
                   "catalogue has: a mapped dataset may have fewer.",
}
_ROW = {"type": "object", "required": ["row_id", "title", "items"],
        "properties": {"row_id": {"type": "string"}, "title": {"type": "string"},
                       "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}}
_SCREEN = {
    "type": "object",
    "required": ["user_id", "platform", "serve_date", "model_version", "cache_version", "source", "rows"],
    "properties": {
        "user_id": {"type": "string"}, "platform": {"type": "string"},
        "serve_date": {"type": "string", "format": "date"}, "model_version": {"type": "integer"},
        "cache_version": {"type": "string"},
        "source": {"enum": ["personal", "popular"],
                   "description": "popular: an unknown user gets the platform's popular row"},
        "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
    },
}
_HEALTH = {"type": "object", "required": ["status", "cache_version"],
           "properties": {"status": {"enum": ["ok", "unavailable"]},
                          "cache_version": _NULLABLE_STR, "serve_date": {"type": "string"},
                          "model_version": {"type": "integer"}, "keys": {"type": "integer"},
                          "age_s": {"type": "number"}, "error": {"type": "string"}}}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def openapi(max_k: int) -> dict:
    query = [
        {"name": "platform", "in": "query", "required": True, "schema": {"type": "string"},
         "description": "one of the published cache's platforms (the simulator's: bike, tread, app)"},
        {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": max_k},
         "description": "at most this many items per row"},
        {"name": "row", "in": "query", "schema": {"type": "string"},
         "description": "only this row (for_you, morning, ...; popular)"},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "homefeed read service", "version": "1",
                 "description": "Home-screen rows per user and platform, read from the published "
                                "cache. Read-only."},
        "paths": {
            "/users/{user_id}/recommendations": {"get": {
                "summary": "A user's home screen on one platform",
                "parameters": [{"name": "user_id", "in": "path", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 128}}, *query],
                "responses": {"200": _json("Screen", "the rows; header x-cache-version names the version"),
                              "400": _json("Error", "a bad parameter, named in `field`"),
                              "414": _json("Error", "query string too long"),
                              "503": _json("Error", "no published cache")},
            }},
            "/healthz": {"get": {"summary": "The cache being served",
                                 "responses": {"200": _json("Health", "serving"),
                                               "503": _json("Health", "no published cache")}}},
            "/openapi.json": {"get": {"summary": "This description",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {"schemas": {"Item": _ITEM, "Row": _ROW, "Screen": _SCREEN,
                                   "Health": _HEALTH, "Error": _ERROR}},
    }
