"""Fixtures for the home-feed tests: small synthetic versions, published with the popular list."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from homefeed.cache import CacheStore, CacheVersion
from homefeed.synthetic import synthetic_popular, synthetic_recommendations
from tests.homefeed.data import SERVE_DATE


@pytest.fixture
def make_frames() -> Callable[..., list[pl.DataFrame]]:
    def make(n_users: int = 40, *, seed: int = 1, model_version: int = 1, k: int = 5,
             chunk_users: int = 15, **kw) -> list[pl.DataFrame]:
        return list(synthetic_recommendations(n_users, seed=seed, model_version=model_version, k=k,
                                              serve_date=SERVE_DATE, chunk_users=chunk_users, **kw))
    return make


@pytest.fixture
def popular() -> pl.DataFrame:
    return synthetic_popular(k=8, seed=7)


@pytest.fixture
def publish(popular) -> Callable[..., CacheVersion]:
    def run(store: CacheStore, frames: list[pl.DataFrame], model_version: int = 1) -> CacheVersion:
        return store.publish(iter(frames), popular, serve_date=SERVE_DATE, model_version=model_version)
    return run
