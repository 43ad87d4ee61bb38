"""ml.promotion: the pure gate (decide) and its effect on a real MLflow registry (apply)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before anything imports mlflow
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest

from ml import tracking
from ml.promotion import PromotionDecision, apply, decide

# -- decide: pure ------------------------------------------------------------------------------


def test_first_model_is_promoted():
    d = decide({"map@10": 0.2}, None)
    assert d == PromotionDecision(True, "champion", d.reason, "map@10", 0.2, None)
    assert "first model" in d.reason


def test_a_first_model_must_beat_popularity_beyond_the_interval():
    unsure = {"ratio": 1.23, "low": 0.81, "high": 1.78}
    d = decide({"map@10": 0.0702}, None, vs_popularity=unsure)
    assert not d.promote and d.alias == "challenger"
    assert d.reason == ("first model: map@10 0.0702 vs popularity 1.23x [0.81, 1.78]: the "
                        "interval's lower bound is not above 1")
    sure = {"ratio": 3.1, "low": 2.9, "high": 3.3}
    d = decide({"map@10": 0.134}, None, vs_popularity=sure)
    assert d.promote and "beats popularity 3.10x [2.90, 3.30] (lower bound above 1)" in d.reason
    # an interval that could not be computed is no evidence
    assert not decide({"map@10": 0.1}, None, vs_popularity={"ratio": 1.5, "low": math.nan,
                                                             "high": math.nan}).promote
    # with a champion the rule is the champion's, and the reason shows that ratio's interval
    d = decide({"map@10": 0.2}, {"map@10": 0.1}, vs_popularity=unsure,
               vs_champion={"ratio": 2.0, "low": 1.5, "high": 2.5})
    assert d.promote and "(ratio 2.00x [1.50, 2.50])" in d.reason


def test_too_few_lists_cannot_conclude():
    d = decide({"map@10": 0.3}, None, lists=80, min_lists=100,
               vs_popularity={"ratio": 3.0, "low": 2.0, "high": 4.0})
    assert not d.promote and d.reason == "evaluated on 80 lists, fewer than the 100 needed to conclude"
    assert decide({"map@10": 0.3}, None, lists=100, min_lists=100).promote


def test_better_model_is_promoted_with_numbers_in_the_reason():
    d = decide({"map@10": 0.2130}, {"map@10": 0.2000}, champion_version=3)
    assert d.promote and d.alias == "champion" and d.champion == 0.2
    assert d.reason == "map@10 0.2130 beats champion v3 0.2000 on the same evaluation set"


def test_a_gain_within_noise_is_promoted_and_not_called_a_win():
    unsure = {"ratio": 1.03, "low": 0.99, "high": 1.06}
    d = decide({"map@10": 0.1214}, {"map@10": 0.1184}, champion_version=1, vs_champion=unsure)
    assert d.promote and d.alias == "champion"
    assert d.reason == ("map@10 0.1214 is above champion v1 0.1184 (ratio 1.03x [0.99, 1.06]) on the same "
                        "evaluation set; the interval includes 1: promoted on the point gain (rule 5)")
    sure = {"ratio": 1.08, "low": 1.02, "high": 1.15}
    d = decide({"map@10": 0.1280}, {"map@10": 0.1184}, champion_version=1, vs_champion=sure)
    assert d.promote and d.reason == ("map@10 0.1280 beats champion v1 0.1184 (ratio 1.08x [1.02, 1.15]) "
                                      "on the same evaluation set")


def test_worse_model_is_not_promoted():
    d = decide({"map@10": 0.2130}, {"map@10": 0.2150}, champion_version=3)
    assert not d.promote and d.alias == "challenger"
    assert d.reason == "map@10 0.2130 does not beat champion v3 0.2150 on the same evaluation set"


def test_tie_does_not_promote():
    assert not decide({"map@10": 0.25}, {"map@10": 0.25}).promote


def test_min_relative_gain():
    assert not decide({"map@10": 0.204}, {"map@10": 0.2}, min_relative_gain=0.05).promote
    d = decide({"map@10": 0.211}, {"map@10": 0.2}, min_relative_gain=0.05)
    assert d.promote and "by more than 5.0%" in d.reason


def test_failed_checks_block_even_a_first_model():
    for champion in (None, {"map@10": 0.1}):
        d = decide({"map@10": 0.9}, champion, failed_checks=["gold_freshness", "label_rate"])
        assert not d.promote and d.alias == "challenger"
        assert "gold_freshness" in d.reason and "label_rate" in d.reason


@pytest.mark.parametrize("candidate", [{"map@10": math.nan}, {"auc_take": 0.7}, {}])
def test_candidate_without_the_metric_is_not_promoted(candidate):
    for champion in (None, {"map@10": 0.1}):
        d = decide(candidate, champion)
        assert not d.promote and "no finite map@10" in d.reason


def test_champion_without_the_metric_is_not_replaced_automatically():
    d = decide({"map@10": 0.3}, {"map@10": math.nan}, champion_version=2)
    assert not d.promote and "champion v2 has no finite map@10" in d.reason


def test_metrics_read_back_from_mlflow_use_the_mapped_key():
    d = decide({"map_at_10": 0.3}, {"map_at_10": 0.2})
    assert d.promote and d.candidate == 0.3 and d.champion == 0.2


# -- apply: real registry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A SQLite store with model `dlrm-gate` holding versions 1..4, each from its own run."""
    import mlflow

    data_dir = tmp_path_factory.mktemp("data")
    uri = tracking.default_tracking_uri(data_dir)
    tracking.ensure_experiment("tests-promotion", uri, tracking.default_artifact_root(data_dir))
    client = tracking.client(uri)
    name = "dlrm-gate"
    client.create_registered_model(name)
    for score in (0.20, 0.19, 0.25, 0.30):
        with mlflow.start_run() as run:
            tracking.log_dict_metrics({"map@10": score})
        client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
    return uri, name


def _alias(uri: str, name: str, alias: str) -> int | None:
    mv = tracking.get_alias_version(name, alias, client_or_uri=uri)
    return None if mv is None else int(mv.version)


def test_apply_moves_champion_only_on_promotion(registry):
    uri, name = registry
    client = tracking.client(uri)

    def metrics(version: int) -> dict[str, float]:
        # stands in for "score that version on the candidate's evaluation set"
        return tracking.version_run_metrics(name, version, client_or_uri=uri)

    # v1: the first model
    d1 = decide(metrics(1), None)
    apply(uri, name, 1, d1, champion_version=None)
    assert _alias(uri, name, "champion") == 1
    tags = client.get_model_version(name, "1").tags
    assert tags["promotion_decision"] == "promoted" and "first model" in tags["promotion_reason"]

    # v2 is worse: challenger, champion stays on v1
    d2 = decide(metrics(2), metrics(1), champion_version=1)
    apply(client, name, 2, d2, champion_version=1)
    assert _alias(uri, name, "champion") == 1 and _alias(uri, name, "challenger") == 2
    tags = client.get_model_version(name, "2").tags
    assert tags["promotion_decision"] == "rejected"
    assert tags["promotion_reason"] == (
        "map@10 0.1900 does not beat champion v1 0.2000 on the same evaluation set"
    )

    # v3 is better: champion moves, v1 is marked superseded, the challenger alias stays on v2
    d3 = decide(metrics(3), metrics(1), champion_version=1)
    apply(uri, name, 3, d3, champion_version=1)
    assert _alias(uri, name, "champion") == 3 and _alias(uri, name, "challenger") == 2
    assert client.get_model_version(name, "1").tags["superseded_by"] == "3"

    # a promotion decided against a stale champion is refused; nothing moves
    stale = decide(metrics(4), metrics(1), champion_version=1)
    with pytest.raises(RuntimeError, match="champion is v3"):
        apply(uri, name, 4, stale, champion_version=1)
    assert _alias(uri, name, "champion") == 3
    assert "promotion_decision" not in client.get_model_version(name, "4").tags


def test_a_champion_is_judged_only_on_days_it_did_not_train_on():
    import datetime as dt

    from ml.workflow import Champion

    days = [dt.date(2026, 10, d) for d in (27, 28, 29)]
    champ = Champion(3, score_fn=None, encoders=None, train_end=dt.date(2026, 10, 27))
    assert champ.fair_days(days) == days[1:]  # it trained on the 27th
    assert Champion(3, None, None, dt.date(2026, 10, 29)).fair_days(days) == []
    assert Champion(3, None, None, None).fair_days(days) == days  # a run that did not say
    # none left: the asset passes a NaN champion metric; the gate keeps the champion
    d = decide({"map@10": 0.9}, {"map@10": math.nan}, champion_version=3)
    assert not d.promote and "not replacing it automatically" in d.reason
