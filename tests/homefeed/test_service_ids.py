"""The read service serves every id of the lakehouse's one id grammar (lakehouse/contract.py
ID_PATTERN, evaluated by polars as ingest does), and refuses the dangerous ids outside it with a
400 naming the field. homefeed may not import lakehouse; this test may import both."""

from __future__ import annotations

import random
import urllib.parse

import orjson
import polars as pl
import pytest

from homefeed.cache import CacheReader, CacheStore
from homefeed.service import USER_ID, USER_ID_MAX
from homefeed.synthetic import synthetic_popular, synthetic_recommendations, user_id
from lakehouse.contract import ID_MAX_LENGTH, ID_PATTERN
from tests.homefeed.data import SERVE_DATE
from tests.homefeed.live import call, live_service

# ids of the grammar, one per kind the brief names and then some
KNOWN = [
    "u0000123", "new-user_42", "Ab_9", "_x",                      # ASCII
    "josé", "Zoë.Müller", "łódź-1", "Ωmega",                      # accented and other Latin/Greek
    "山田太郎", "사용자", "ユーザー_7",                            # CJK
    "0", "20261031", "١٢٣", "０１２",                              # digits only (Arabic-Indic, fullwidth)
    "x" * ID_MAX_LENGTH, "é" * ID_MAX_LENGTH,                     # the longest
    "a.b", "tenant:42", "me@example.com", "a+b", "a-b", "a.:@+-_z",  # . : @ + -
    "क्षत्रिय", "a\u0301", "می\u200cخواهم", "\u200dab",  # combining marks, zero-width (non-)joiners
    "ⅷ", "‿x",  # a letter-number, a connector
]
UNKNOWN = ["josé2", "漢字", "9", "x" * (ID_MAX_LENGTH - 1) + "y", "who@where.org", "a:b:c"]

# (id, why): outside the grammar, and harmful to serve; each must be a 400 on user_id
DANGEROUS = [
    ("a\x00b", "NUL"), ("a" * 10_000, "10,000 characters"), ("x" * (ID_MAX_LENGTH + 1), "one too long"),
    ("u0000007\n", "newline"), ("a\rb", "CR"), ("a\tb", "tab"), ("a b", "space"), ("a\u2028b", "line separator"),
    ("a\x85b", "C1 control"), ("..", "dot segment"), (".", "dot segment"), ("\ufffd", "not UTF-8"),
]


def grammar_accepts(ids: list[str]) -> list[bool]:
    """The lakehouse's verdict, computed the way ingest computes it."""
    return pl.Series(ids, dtype=pl.String).str.contains(ID_PATTERN).to_list()


def random_ids(n: int, seed: int) -> list[str]:
    """Random strings over letters of several scripts, digits, the grammar's punctuation and
    characters it refuses (spaces, controls, '/', emoji...): about half fall inside it."""
    good = "abcXYZ019_.:@+-" "éñüßøÅ" "山田漢字" "Жя" "αΩ" "١٠" "०क्ष" "\u0301\u200c\u200d" "０Ａ" "ǅⅷ‿"
    bad = " \t\n\r\x00\x7f\x85\xa0/\\?#%'\"<,\u2028\u202e\ufffd😀"
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        length = rnd.choice([1, 2, 3, 8, 16, 64, ID_MAX_LENGTH - 1, ID_MAX_LENGTH, ID_MAX_LENGTH + 1])
        out.append("".join(rnd.choice(bad) if rnd.random() < 0.01 else rnd.choice(good) for _ in range(length)))
    return out


def test_the_service_rule_contains_the_grammar():
    assert USER_ID_MAX == ID_MAX_LENGTH
    sample = KNOWN + UNKNOWN
    assert [i for i, ok in zip(sample, grammar_accepts(sample)) if not ok] == []
    ids = random_ids(20_000, seed=3)
    accepted = [i for i, ok in zip(ids, grammar_accepts(ids)) if ok]
    assert 5_000 < len(accepted) < 19_000  # the sample covers both sides
    assert [i for i in accepted if not USER_ID.fullmatch(i)] == []
    dangerous = [i for i, _ in DANGEROUS]
    assert not any(grammar_accepts(dangerous))
    assert [i for i in dangerous if USER_ID.fullmatch(i)] == []


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The real service on a cache whose users are KNOWN (u0000000.. renamed)."""
    root = tmp_path_factory.mktemp("cache")
    rename = {user_id(i): uid for i, uid in enumerate(KNOWN)}
    frames = [f.with_columns(pl.col("user_id").replace_strict(rename)) for f in
              synthetic_recommendations(len(KNOWN), k=3, seed=2, serve_date=SERVE_DATE, model_version=2)]
    CacheStore(root).publish(frames, synthetic_popular(k=4, seed=3), serve_date=SERVE_DATE, model_version=2)
    with live_service(root, tmp_path_factory.mktemp("logs")) as live:
        yield live, root


def url(base: str, uid: str, safe: str = "", query: str = "platform=bike") -> str:
    return f"{base}/users/{urllib.parse.quote(uid, safe=safe)}/recommendations?{query}"


def test_known_ids_get_their_rows(site):
    live, root = site
    reader = CacheReader(root)
    for uid in KNOWN:
        for safe in ("", ".:@+-_"):  # fully percent-encoded, and with the grammar's ASCII as is
            status, body = call(url(live.base, uid, safe))
            assert status == 200, (uid, body[:200])
            assert body == reader.get(uid, "bike"), uid  # the stored row, byte for byte
            assert orjson.loads(body)["source"] == "personal"
    reader.close()


def test_unknown_ids_get_the_popular_fallback(site):
    live, _ = site
    ids = random_ids(2_000, seed=11)
    sample = [i for i, ok in zip(ids, grammar_accepts(ids)) if ok][:60] + UNKNOWN
    assert len(sample) > 60
    for uid in sample:
        status, body = call(url(live.base, uid, query="platform=app&k=2"))
        assert status == 200, (uid, body[:200])
        p = orjson.loads(body)
        assert (p["user_id"], p["source"], len(p["rows"][0]["items"])) == (uid, "popular", 2)


@pytest.mark.parametrize("uid, why", DANGEROUS, ids=[w for _, w in DANGEROUS])
def test_dangerous_ids_get_a_400_naming_the_field(site, uid, why):
    status, body = call(url(site[0].base, uid))
    assert status == 400, (why, body[:200])
    err = orjson.loads(body)
    assert err["field"] == "user_id" and "user_id must be 1-128 characters" in err["error"]
    assert len(body) < 400  # the echo is bounded
