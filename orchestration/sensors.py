"""Sensors: complete landing days start their run; corrected days recompute what depends on
them; a new champion re-scores the latest day; declarative automation.

* ``landing_zone_sensor`` offers a day once its manifest (lakehouse.landing.manifest) is there and
  matches the files. A day still waiting for it is named in the tick; one waiting longer than the
  grace period (``LakehouseResource.landing_grace_hours``) is reported to ops/remediation_log as
  needing a person.
* ``correction_sensor``: a re-ingest that changed a committed day D (bronze metadata
  ``corrected_days``) recomputes D..the newest built day through dbt and the gold publish, as one
  range run of ``recompute_features_job``: running totals, 7/28-day windows, affinities and
  training examples of the later days depend on D, so gold converges to a from-scratch rebuild.
"""


import datetime as dt
import json

import dagster as dg

from assets.bronze import bronze_key
from assets.ops import log_materialization
from assets.resources import LakehouseResource, MlflowResource
from assets.serving import RECS_KEY
from lakehouse.contract import ENTITIES
from lakehouse.io import delta
from lakehouse.landing.manifest import scan_landing
from operations.remediation_log import report_row
from orchestration.jobs import daily_job, recompute_job, rescore_job
from orchestration.partitions import daily_partitions
from orchestration.remediation import remediation_log

# the gold table whose partitions say which days are built (every dataset publishes it)
BUILT_TABLE, BUILT_COLUMN = "user_features_daily", "feature_date"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dg.sensor(
    name="landing_zone_sensor",
    job=daily_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts the daily run of a day when its landing files and their manifest appear or "
    "change; names the days still waiting for a manifest, and reports those overdue.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource):
    settings = lakehouse.settings()
    state = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = state.get("seen", state if "seen" not in state else {})
    reported: dict[str, str] = state.get("reported", {})
    valid = set(daily_partitions.get_partition_keys(current_time=_now() + dt.timedelta(days=1)))
    requests, waiting, overdue = [], [], []
    grace_s = lakehouse.landing_grace_hours * 3600
    now = _now()
    for day, status in sorted(scan_landing(settings.landing_uri, [e.name for e in ENTITIES], seen).items()):
        if seen.get(day) == status.fingerprint:
            continue
        if not status.complete:
            age_s = now.timestamp() - (status.oldest_mtime_ns or 0) / 1e9 if status.files else 0.0
            (overdue if status.files and age_s > grace_s else waiting).append((day, status, age_s))
            continue
        if day not in valid:
            context.log.warning(f"landing day {day} is outside the partitions; ignored")
            continue
        requests.append(dg.RunRequest(run_key=f"{day}:{status.fingerprint}", partition_key=day,
                                      tags={"lakehouse/trigger": "landing"}))
        seen[day] = status.fingerprint
    for day, status, age_s in waiting:
        context.log.info(f"landing day {day} is waiting: {'; '.join(status.problems)}")
    events, asset_events = [], []
    for day, status, age_s in overdue:
        context.log.error(f"landing day {day} is incomplete after {age_s / 3600:.1f} h "
                          f"(grace {lakehouse.landing_grace_hours:g} h): {'; '.join(status.problems)}")
        if reported.get(day) != status.fingerprint:
            events.append(report_row(
                event_id=f"landing:{day}:{status.fingerprint}", job_name="landing_zone_sensor", partition=day,
                rule="landing_day_incomplete", matched="; ".join(status.problems)[:2000],
                evidence=f"{len(status.files)} files landed for {day} {age_s / 3600:.1f} h ago; "
                         + "; ".join(status.problems),
                reason=f"the day has not completed within {lakehouse.landing_grace_hours:g} h: check the "
                       "exporter (the manifest is written last, after every file)", at=now))
            reported[day] = status.fingerprint
    if events:
        log = remediation_log(settings)
        log.append(events)
        asset_events.append(log_materialization(log.decisions(), events, log.uri))
    context.update_cursor(json.dumps({"seen": seen, "reported": reported}, sort_keys=True))
    note = "; ".join([f"waiting for {len(waiting)} day(s): {', '.join(d for d, _, _ in waiting)}"] * bool(waiting)
                     + [f"OVERDUE {len(overdue)} day(s): {', '.join(d for d, _, _ in overdue)} "
                        "(reported to ops/remediation_log)"] * bool(overdue))
    if not requests and not asset_events:
        return dg.SkipReason(note or "no new or changed landing days")
    if note:
        context.log.warning(note)
    return dg.SensorResult(run_requests=requests, asset_events=asset_events)


@dg.sensor(
    name="correction_sensor",
    job=recompute_job,
    minimum_interval_seconds=60,
    # on by default: it only acts when a committed day was changed, and then gold is stale
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a re-ingest changed a committed day, recomputes that day and every later "
    "built day (dbt + gold publish) in one range run, so gold equals a rebuild.",
)
def correction_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource):
    instance = context.instance
    after = int(context.cursor) if context.cursor else None
    corrected: dict[str, set[str]] = {}  # first corrected day per triggering run
    newest_id = after
    records = []
    for e in ENTITIES:
        res = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=bronze_key(e.name), after_storage_id=after), limit=1000,
            ascending=True)
        records += res.records
    records.sort(key=lambda r: r.storage_id)
    for rec in records:
        run = instance.get_run_by_id(rec.run_id)
        if run is not None and not run.is_finished:
            break  # wait: the run may still be building its own day's features
        newest_id = rec.storage_id
        meta = rec.asset_materialization.metadata if rec.asset_materialization else {}
        days = meta.get("corrected_days")
        if days is not None and days.value:
            corrected.setdefault(rec.run_id, set()).update(days.value)
    if newest_id is not None:
        context.update_cursor(str(newest_id))
    settings = lakehouse.settings()
    # the newest day gold holds, from the table itself (whichever instance built it)
    built = delta.partition_values(settings.table_uri("gold", BUILT_TABLE), BUILT_COLUMN,
                                   settings.storage_options())
    if not corrected or not built:
        return dg.SkipReason("no committed day was corrected" if not corrected else
                             "corrected days, but no features built yet")
    newest = max(built)
    first = min(min(days) for days in corrected.values())
    if first > newest:
        return dg.SkipReason(f"corrected {first}, after the newest built day {newest}: nothing to recompute")
    context.log.info(f"committed day(s) corrected by run(s) {sorted(corrected)}: recomputing {first}..{newest}")
    return dg.RunRequest(
        run_key=f"correction:{first}:{newest}:{newest_id}",
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": newest,
              "lakehouse/trigger": "correction",
              "lakehouse/corrected_days": ",".join(sorted(set().union(*corrected.values())))[:200]})


@dg.sensor(
    name="new_champion_sensor",
    job=rescore_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="When MLflow's `champion` alias moves to a new version, re-scores the latest "
    "scored day with it and republishes the cache.",
)
def new_champion_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource,
                        mlflow: MlflowResource):
    from ml import tracking as mlt

    settings = lakehouse.settings()
    tr = mlflow.tracking(settings)
    mv = mlt.get_alias_version(tr.registered_model, "champion", client_or_uri=tr.tracking_uri)
    if mv is None:
        return dg.SkipReason(f"no champion in MLflow model '{tr.registered_model}' yet")
    seen = context.cursor or None
    if seen == str(mv.version):
        return dg.SkipReason(f"champion is still version {mv.version}")
    context.update_cursor(str(mv.version))
    partition = latest_scored_partition(context.instance)
    if partition is None:
        return dg.SkipReason(f"champion v{mv.version}, but no day has been scored yet: the daily "
                             "schedule will use it")
    return dg.RunRequest(run_key=f"champion-v{mv.version}-{partition}", partition_key=partition,
                         tags={"lakehouse/trigger": "new_champion", "lakehouse/champion": str(mv.version)})


def latest_scored_partition(instance: dg.DagsterInstance) -> str | None:
    """The newest day whose recommendations were materialized (the one the app serves)."""
    keys = instance.get_materialized_partitions(RECS_KEY)
    return max(keys) if keys else None


automation_sensor = dg.AutomationConditionSensorDefinition(
    name="automation_sensor",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Evaluates the assets' automation conditions: a changed dbt model or re-ingested "
    "day reruns what depends on it; a day's new gold data rescores it.",
)
