"""The home-screen preview on the lakehouse (`make preview`): `homefeed.preview`'s page with the
user's recent history (gold training_examples' takes + the class catalogue), the simulator's
planted favourites (`simulator.favourites`, rebuilt from `<landing>/_simulator/config.json`)
and the challenger (MLflow alias `challenger`) scored on demand for the one user shown.

    python -m ml.preview [--port 8001] [--host 127.0.0.1] [--cache DIR] [--challenger ALIAS|none]

Everything is read: Delta through polars, MLflow through its client; nothing is written. No
challenger alias (every trained model promoted, or none trained): the other model is the
popularity ranker (the cache's popular rows), and the page says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import orjson
import polars as pl

from homefeed.cache import CacheReader, default_cache_dir
from homefeed.payload import class_fields, personal_payloads
from homefeed.preview import PreviewSource, create_preview_app, serve
from lakehouse.io.settings import LakehouseSettings
from ml.datasets import dataset_for
from ml.gold import GoldStore

CHALLENGER = "challenger"  # the alias ml.promotion gives a model it did not promote (default)


def _history(gold: GoldStore, catalogue: pl.DataFrame):
    def history(user_id: str, n: int) -> list[dict]:
        lf = gold.scan("training_examples")
        hour = "hour_of_day" if "hour_of_day" in lf.collect_schema().names() else None
        takes = (lf.filter((pl.col("user_id") == user_id) & (pl.col("label_take") == 1))
                 .select(pl.col("event_date").alias("date"), (pl.col(hour) if hour else pl.lit(None)).alias("hour"),
                         "platform", "class_id")
                 .unique().sort(["date", "hour"], descending=True).head(n).collect())
        rows = takes.join(catalogue, on="class_id", how="left").sort(["date", "hour"], descending=True)
        out = rows.to_dicts()
        for r in out:  # a class the catalogue lacks: its id
            r["title"] = r.get("title") or r["class_id"]
        return out
    return history


def _favourites(settings: LakehouseSettings):
    from simulator.favourites import true_favourites
    from simulator.oracle import read_simulator_config

    config = read_simulator_config(settings.landing_uri)
    if config is None:
        return None
    return lambda user_ids: true_favourites(config, user_ids)


def _challenger(settings: LakehouseSettings, gold: GoldStore, serve_date: dt.date, catalogue: pl.DataFrame,
                registered_model: str, alias: str):
    """(score(user_id, platform) -> payload, its label), or None without that alias."""
    from ml import tracking as mlt
    from ml.inference import ModelRef, UserScorer
    from ml.rows import InferenceSettings

    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlt.default_tracking_uri(settings.data_dir)
    mv = mlt.get_alias_version(registered_model, alias, client_or_uri=uri)
    if mv is None:
        return None
    dataset = dataset_for(settings)
    inf = InferenceSettings(dataset=dataset, exclude_days=dataset.evaluation_protocol(settings).exclude_seen_days)
    ref = ModelRef(model_uri=mv.source, version=int(mv.version), tracking_uri=uri)
    # [UserScorer, user_id, rows]: loaded at the first request (the page opens before), the last
    # user's rows kept
    scorer: list = []
    fields = class_fields(catalogue, serve_date)

    def score(user_id: str, platform: str) -> dict | None:
        if not scorer:
            scorer[:] = [UserScorer(ref, gold, serve_date - dt.timedelta(days=1), inf), None, None]
        if scorer[1] != user_id:  # one scoring per page: every platform's rows at once
            scorer[1:] = [user_id, scorer[0].rows([user_id])]
        rows = scorer[2]
        if rows.height == 0:
            return None
        rows = rows.filter(pl.col("platform") == platform)
        for _, p, body in personal_payloads(rows, serve_date=serve_date, model_version=int(mv.version),
                                            cache_version="scored on demand", fields=fields):
            if p == platform:
                return orjson.loads(body)
        return None
    return score, f"{alias} (model v{mv.version}, scored now for this user)"


def lakehouse_source(settings: LakehouseSettings, cache_dir: Path, *, challenger: str | None = CHALLENGER,
                     registered_model: str = "class_recommender") -> PreviewSource:
    """The page's source; `challenger`: the MLflow alias of the other model (None: popularity)."""
    gold = GoldStore(settings.uri, settings.storage_options() or None)
    catalogue = dataset_for(settings).display_catalogue(gold)
    source = PreviewSource(history=_history(gold, catalogue.drop("release_date", strict=False)),
                           favourites=_favourites(settings))
    reader = CacheReader(cache_dir, refresh_s=0)
    version = reader.version
    if version is not None:
        sample = [version.platforms[0]]
        source.users = lambda: _cached_users(reader, sample[0])
        if challenger:
            found = _challenger(settings, gold, version.serve_date, catalogue, registered_model, challenger)
            if found is None:
                source.notes.append(f"No {challenger!r} alias on MLflow model {registered_model!r}: "
                                    "the other model shown is the popularity ranker.")
            else:
                source.challenger, source.challenger_name = found
    return source


def _cached_users(reader: CacheReader, platform: str, n: int = 200) -> list[str]:
    """Some users with rows in the cache (the first n on a platform), to pick one at random."""
    v = reader.version
    if v is None:
        return []
    from homefeed.cache import connect_readonly

    conn = connect_readonly(v.path)
    try:
        return [r[0] for r in conn.execute("SELECT user_id FROM payload WHERE platform = ? LIMIT ?",
                                           (platform, n))]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ml.preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=None,
                   help="cache root (default: $HOMEFEED_CACHE_DIR, else $LAKEHOUSE_DATA_DIR/cache)")
    p.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--registered-model", default="class_recommender")
    p.add_argument("--challenger", default=CHALLENGER,
                   help="MLflow alias of the other model (default: %(default)s); 'none': the popularity ranker")
    args = p.parse_args(argv)
    settings = LakehouseSettings.from_env()
    cache = args.cache or default_cache_dir()
    source = lakehouse_source(settings, cache, challenger=None if args.challenger == "none" else args.challenger,
                              registered_model=args.registered_model)
    print(f"preview: http://{args.host}:{args.port}/ (?user=ID&model=champion|challenger) on {cache}",
          file=sys.stderr, flush=True)
    serve(create_preview_app(cache, source), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
