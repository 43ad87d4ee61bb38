"""A sensor on the landing zone: a new or changed day of exports starts that day's run."""


import datetime as dt
import hashlib
import json
import re
from collections import defaultdict

import dagster as dg

from assets.resources import LakehouseResource, MlflowResource
from assets.serving import RECS_KEY
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import filesystem_for, list_files
from orchestration.jobs import daily_job, rescore_job
from orchestration.partitions import daily_partitions

_DAY = re.compile(r"(?:^|/)([a-z_]+)/date=(\d{4}-\d{2}-\d{2})/[^/]+$")
_MANIFEST = re.compile(r"(?:^|/)_manifests/date=(\d{4}-\d{2}-\d{2})\.json$")


def landing_fingerprints(settings: LakehouseSettings) -> dict[str, str]:
    """day -> a digest of (entity, file, size, mtime) for every landing file of the day.

    When the exporter writes day manifests (``_manifests/date=D.json``, written last), only days
    with a manifest count: a day still being written is not picked up half-way.
    """
    fs, root = filesystem_for(settings.landing_uri)
    per_day: dict[str, list[str]] = defaultdict(list)
    manifests: set[str] = set()
    for info in list_files(fs, root):
        rel = info.path[len(root):].lstrip("/")
        if (m := _MANIFEST.search(rel)):
            manifests.add(m.group(1))
            continue
        m = _DAY.search(rel)
        if not m or info.base_name.startswith(("_", ".")):
            continue
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        per_day[m.group(2)].append(f"{rel}:{info.size}:{mtime}")
    days = {d: v for d, v in per_day.items() if not manifests or d in manifests}
    return {d: hashlib.sha1("\n".join(sorted(v)).encode()).hexdigest()[:16] for d, v in days.items()}


@dg.sensor(
    name="landing_zone_sensor",
    job=daily_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts the daily run of a day when its landing files appear or change.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource):
    settings = lakehouse.settings()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid = set(daily_partitions.get_partition_keys(current_time=dt.datetime.now(dt.timezone.utc)
                                                     + dt.timedelta(days=1)))
    requests = []
    for day, fp in sorted(landing_fingerprints(settings).items()):
        if seen.get(day) == fp:
            continue
        if day not in valid:
            context.log.warning(f"landing day {day} is outside the partitions; ignored")
            continue
        requests.append(dg.RunRequest(run_key=f"{day}:{fp}", partition_key=day,
                                      tags={"lakehouse/trigger": "landing"}))
        seen[day] = fp
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new or changed landing days")
    return requests


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
