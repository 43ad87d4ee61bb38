"""The example external dataset (`python -m simulator external`): deterministic, shaped as
documented, and with structure a model can learn beyond popularity."""

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from simulator.cli import main
from simulator.external import ACTIONS, DEVICES, GENRES, ExternalConfig, generate_external

START_MS = 1788220800000  # 2026-09-01T00:00:00Z


@pytest.fixture(scope="module")
def default_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("listening")
    generate_external(out, ExternalConfig(ratings=True))
    return out


def events(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_csv(p) for p in sorted((out / "events").glob("*.csv"))])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    cfg = ExternalConfig(days=4, users=50, items=40, ratings=True, seed=11)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = generate_external(a, cfg)
    assert generate_external(b, cfg) == summary
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == ["events/part-000.csv", "events/part-001.csv", "events/part-002.csv", "ratings.csv",
                     "tracks.parquet", "users.jsonl"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    generate_external(c, cfg.replace(seed=12))
    assert (c / "events/part-000.csv").read_bytes() != (a / "events/part-000.csv").read_bytes()
    # a re-run with fewer files leaves no stale parts behind
    generate_external(a, cfg.replace(files=1))
    assert sorted(p.name for p in (a / "events").iterdir()) == ["part-000.csv"]
    assert events(a).height == events(b).height


def test_files_have_the_documented_shape(default_data):
    ev = events(default_data)
    assert ev.columns == ["listener", "track", "ts", "action", "device", "network", "battery"]
    assert ev.schema["ts"] == pl.Int64 and ev.schema["battery"] == pl.Float64
    assert set(ev["action"]) == set(ACTIONS) and set(ev["device"]) == set(DEVICES)
    assert set(ev["network"]) == {"wifi", "cellular"}
    assert ev["battery"].min() >= 0 and ev["battery"].max() <= 100
    assert ev["ts"].min() >= START_MS and ev["ts"].max() < START_MS + 30 * 86_400_000  # epoch ms, 30 days
    assert ev["listener"].str.contains(r"^L\d{5}$").all() and ev["track"].str.contains(r"^T\d{5}$").all()
    assert 60_000 < ev.height < 120_000
    days = ev.select(pl.from_epoch("ts", time_unit="ms").dt.date().n_unique()).item()
    assert days == 30
    # a full listen or a skip ends every play (but plays cut off by the export's end); likes
    # only follow full listens
    n = dict(ev.group_by("action").len().iter_rows())
    assert 0 <= n["play"] - (n["full_listen"] + n["skip"]) <= 20 and 0 < n["like"] < n["full_listen"]

    users = [json.loads(line) for line in (default_data / "users.jsonl").open()]
    assert set(users[0]) == {"listener_id", "country", "plan", "age"}
    assert {u["plan"] for u in users} == {"free", "premium"}
    assert any(u["age"] is None for u in users)
    in_events = set(ev["listener"])
    missing = in_events - {u["listener_id"] for u in users}
    assert 0 < len(missing) < 0.1 * len(in_events)  # some listeners have no users row, as in real exports

    tracks = pl.read_parquet(default_data / "tracks.parquet")
    assert tracks.schema == pl.Schema({"track_id": pl.String, "genre": pl.String, "artist": pl.String,
                                       "duration_s": pl.Float64})
    assert tracks.height == 300 and set(tracks["genre"]) == set(GENRES)
    assert set(ev["track"]) <= set(tracks["track_id"])

    ratings = pl.read_csv(default_data / "ratings.csv")
    assert ratings.columns == ["user", "movie", "stars", "rated_at"]
    assert set(ratings["stars"]) == {1, 2, 3, 4, 5}
    parsed = ratings["rated_at"].str.to_datetime("%d/%m/%Y %H:%M", strict=True)
    assert parsed.min() >= dt.datetime(2026, 9, 1) and parsed.max() < dt.datetime(2026, 10, 1)


def test_taste_context_and_releases_give_a_model_something_to_learn(default_data):
    tracks = pl.read_parquet(default_data / "tracks.parquet")
    plays = (events(default_data).filter(pl.col("action") == "play")
             .join(tracks, left_on="track", right_on="track_id")
             .with_columns(day=((pl.col("ts") - START_MS) // 86_400_000),
                           hour=pl.from_epoch("ts", time_unit="ms").dt.hour()))
    train, test = plays.filter(pl.col("day") < 23), plays.filter(pl.col("day") >= 23)
    pop = train.group_by("track").len().rename({"len": "pop"}).join(
        tracks.select("track_id", "genre"), left_on="track", right_on="track_id")
    # popularity: the same top 10 for everyone
    top10 = pop.sort("pop", "track", descending=[True, False]).head(10)["track"]
    hit_pop = test["track"].is_in(top10.implode()).mean()
    # taste: popularity re-weighted by each listener's genre share in the training days
    share = train.group_by("listener", "genre").len().with_columns(
        share=(pl.col("len") + 0.5) / (pl.col("len").sum().over("listener") + 5))
    ranked = (share.join(pop, on="genre").with_columns(s=pl.col("share") * pl.col("pop"))
              .sort("s", "track", descending=[True, False]).group_by("listener", maintain_order=True).head(10))
    hit_taste = test.join(ranked.select("listener", "track", hit=pl.lit(True)), on=["listener", "track"],
                          how="left")["hit"].is_not_null().mean()
    assert hit_taste > 1.4 * hit_pop, (hit_taste, hit_pop)

    # context: the device and the hour shift the genres played
    def share_of(frame, genres):
        return frame["genre"].is_in(genres).mean()

    focus = ["electronic", "ambient", "classical"]
    office = plays.filter(pl.col("hour").is_between(9, 16))
    assert share_of(office.filter(pl.col("device") == "desktop"), focus) > \
        1.3 * share_of(office.filter(pl.col("device") == "phone"), focus)
    assert share_of(plays.filter(pl.col("device") == "speaker"), ["jazz", "classical", "folk"]) > \
        1.3 * share_of(plays.filter(pl.col("device") == "phone"), ["jazz", "classical", "folk"])
    assert share_of(plays.filter(pl.col("hour") < 6), ["ambient"]) > \
        1.5 * share_of(plays.filter(pl.col("hour") >= 6), ["ambient"])

    # new tracks are released over the window and get played
    first_day = plays.group_by("track").agg(pl.col("day").min())
    assert first_day.filter(pl.col("day") >= 10).height >= 20

    # completion depends on taste: a listener's top genre is completed more often than the rest
    ev = events(default_data).join(tracks, left_on="track", right_on="track_id")
    ends = ev.filter(pl.col("action").is_in(["full_listen", "skip"]))
    top_genre = share.sort("len", descending=True).group_by("listener").first().select("listener", top="genre")
    ends = ends.join(top_genre, on="listener").with_columns(fav=pl.col("genre") == pl.col("top"),
                                                            full=pl.col("action") == "full_listen")
    rate = dict(ends.group_by("fav").agg(pl.col("full").mean()).iter_rows())
    assert rate[True] > rate[False] + 0.1, rate


def test_cli_writes_the_dataset(tmp_path, capsys):
    assert main(["external", "--out", str(tmp_path / "x"), "--days", "3", "--users", "20", "--items", "15",
                 "--seed", "1", "--files", "2", "--start-date", "2027-01-05"]) == 0
    assert "[external] wrote" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "x" / "events").iterdir()) == ["part-000.csv", "part-001.csv"]
    assert not (tmp_path / "x" / "ratings.csv").exists()
    ts = events(tmp_path / "x")["ts"]
    start = int(dt.datetime(2027, 1, 5, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert ts.min() >= start and ts.max() < start + 3 * 86_400_000
