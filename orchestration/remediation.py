"""The failure sensor: diagnose each failed run, retry what can heal, report what cannot.

A plain sensor over run records rather than ``@run_failure_sensor``: a backoff delay needs the
retry to be requested on a later tick, and an outcome needs the retry run watched until it ends;
both live in the cursor. Decisions are written to the Delta remediation log first, then the
cursor moves, so a tick evaluated twice logs each event once (the log merges on event ids).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg

from assets.model import MODEL_KEY, ModelTrainingConfig
from assets.ops import log_materialization
from assets.resources import LakehouseResource
from assets.serving import RECS_KEY, InferenceConfig
from lakehouse.io.errors import clean
from lakehouse.io.settings import LakehouseSettings
from operations.diagnosis import FailedCheck, FailureClassifier, FailureEvidence, RuleClassifier, StepError
from operations.policy import Decision, RemediationPolicy, merge_run_config
from operations.redaction import redact
from operations.remediation_log import RemediationLog, decision_row, outcome_row
from orchestration.jobs import daily_job, ingest_job, lakehouse_job, rescore_job, train_model_job

TAG_OF = "lakehouse/remediation_of"  # on a retry run: the decision (= failed run id) it carries out
TAG_ROOT = "lakehouse/remediation_root"
TAG_ATTEMPT = "lakehouse/remediation_attempt"
TAG_CATEGORY = "lakehouse/remediation_category"
PARTITION_TAGS = ("dagster/partition", "dagster/asset_partition_range_start",
                  "dagster/asset_partition_range_end")


def _op(key: dg.AssetKey) -> str:
    return "__".join(key.path)


# Ops whose config the policy may change, with their Config class (for the defaults).
TUNABLE_OPS: dict[str, type[dg.Config]] = {_op(RECS_KEY): InferenceConfig, _op(MODEL_KEY): ModelTrainingConfig}
RESUMABLE_OPS = (_op(MODEL_KEY),)  # these take `resume_run_id` and resume from Ray checkpoints


def remediation_log(settings: LakehouseSettings) -> RemediationLog:
    return RemediationLog(settings.table_uri("ops", "remediation_log"), settings.storage_options())


# ---------------------------------------------------------------------------------------------
# Evidence from the instance


def _error_chain(err) -> tuple[tuple[str, ...], str, str]:
    classes, messages, stack = [], [], ""
    seen = 0
    while err is not None and seen < 8:
        seen += 1
        if err.cls_name:
            classes.append(err.cls_name)
        if err.message:
            messages.append(clean(err.message).strip())
        if err.stack:
            stack = clean("".join(err.stack[-3:]))
        err = err.cause or err.context
    return tuple(classes), "\n".join(messages)[-4000:], stack[-1500:]


def gather_evidence(instance: dg.DagsterInstance, run: dg.DagsterRun) -> FailureEvidence:
    """The failed steps' errors (whole cause chain), the blocking checks that failed, and the
    run-level failure message of `run`."""
    types = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE,
             dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    errors: list[StepError] = []
    checks: list[FailedCheck] = []
    run_failure = ""
    for entry in instance.all_logs(run.run_id, of_type=types):
        ev = entry.dagster_event
        if ev is None:
            continue
        if ev.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = ev.step_failure_data
            classes, message, stack = _error_chain(data.error) if data.error else ((), "", "")
            if data.user_failure_data is not None and data.user_failure_data.description:
                message = f"{data.user_failure_data.description}\n{message}".strip()
            errors.append(StepError(entry.step_key or "?", classes, message, stack))
        elif ev.event_type == dg.DagsterEventType.RUN_FAILURE:
            data = ev.event_specific_data
            err = getattr(data, "error", None)
            run_failure = (ev.message or "") + (f"\n{_error_chain(err)[1]}" if err else "")
        else:
            data = ev.event_specific_data
            if not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
                meta = {k: getattr(v, "value", v) for k, v in (data.metadata or {}).items()}
                checks.append(FailedCheck(data.asset_key.to_user_string(), data.check_name,
                                          data.description or "", meta))
    tags = run.tags
    partition = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in tags else None)
    return FailureEvidence(
        run_id=run.run_id, job_name=run.job_name, partition=partition, errors=tuple(errors),
        failed_checks=tuple(checks), run_failure=redact(run_failure), attempt=int(tags.get(TAG_ATTEMPT, 0)),
        root_run_id=tags.get(TAG_ROOT) or run.root_run_id or run.run_id)


def effective_op_config(run: dg.DagsterRun, ops: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The config each of `ops` ran with: its Config defaults overlaid with the run's config."""
    given = (run.run_config or {}).get("ops", {})
    out = {}
    for op in ops:
        cls = TUNABLE_OPS.get(op)
        if cls is None:
            continue
        out[op] = {**cls().model_dump(), **(given.get(op, {}) or {}).get("config", {})}
    return out


def materialized_keys(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    return {e.dagster_event.asset_key
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            if e.dagster_event is not None}


def retry_request(run: dg.DagsterRun, decision: Decision, selection: Sequence[dg.AssetKey] | None) -> dict:
    """A JSON-able description of the retry run (kept in the cursor until its backoff is over)."""
    tags = {k: v for k, v in run.tags.items() if k in PARTITION_TAGS}
    tags.update({
        TAG_OF: run.run_id,
        TAG_ROOT: run.tags.get(TAG_ROOT) or run.root_run_id or run.run_id,
        TAG_ATTEMPT: str(decision.attempt),
        TAG_CATEGORY: decision.diagnosis.category.value,
        "lakehouse/trigger": "remediation",
    })
    return {
        "decision_id": run.run_id,
        "job_name": run.job_name,
        "run_config": merge_run_config(run.run_config or {}, decision.config_patch),
        "tags": tags,
        "partition_key": run.tags.get("dagster/partition"),
        "asset_selection": [k.to_user_string() for k in selection] if selection else None,
    }


def _to_run_request(req: Mapping[str, Any]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"remediation-{req['decision_id']}",
        job_name=req["job_name"],
        run_config=req["run_config"],
        tags=req["tags"],
        partition_key=req["partition_key"],
        asset_selection=[dg.AssetKey.from_user_string(k) for k in req["asset_selection"]]
        if req["asset_selection"] else None,
    )


# ---------------------------------------------------------------------------------------------
# The sensor


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def build_remediation_sensor(
    jobs: Sequence[dg.UnresolvedAssetJobDefinition | dg.JobDefinition] = (
        daily_job, lakehouse_job, ingest_job, train_model_job, rescore_job),
    *,
    classifier: FailureClassifier | None = None,
    policy: RemediationPolicy | None = None,
    lookback: dt.timedelta = dt.timedelta(hours=6),
    name: str = "run_failure_remediation_sensor",
    minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """classifier/policy: the rules and bounded retries by default; `lookback`: how far back the
    first tick (no cursor) looks for failed runs."""
    classifier = classifier or RuleClassifier()
    policy = policy or RemediationPolicy()
    job_names = {j.name for j in jobs}

    @dg.sensor(
        name=name,
        jobs=list(jobs),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Diagnoses each failed run of the pipeline's jobs (out of memory, transient "
        "storage/network, lost Ray worker, data quality, config/code) and retries it with a "
        "fitting change, bounded, or reports it; every decision goes to ops/remediation_log.",
    )
    def run_failure_remediation_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        log = remediation_log(settings)
        state = json.loads(context.cursor) if context.cursor else {}
        now = _now()
        since = dt.datetime.fromisoformat(state["since"]) if state.get("since") else now - lookback
        seen: list[str] = state.get("seen", [])
        pending: list[dict] = state.get("pending", [])
        watch: dict[str, str] = state.get("watch", {})
        events: list[dict] = []
        instance = context.instance

        # 1. new failures: diagnose, decide, queue the retry
        records = instance.get_run_records(
            # a small overlap: runs updated at the cursor's instant are not missed (`seen` dedupes)
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                                  updated_after=since - dt.timedelta(seconds=5)),
            order_by="update_timestamp", ascending=True, limit=100)
        newest = since
        events_so_far = None
        for record in records:
            run = record.dagster_run
            newest = max(newest, record.update_timestamp.replace(tzinfo=dt.timezone.utc)
                         if record.update_timestamp.tzinfo is None else record.update_timestamp)
            if run.run_id in seen or run.job_name not in job_names:
                continue
            seen.append(run.run_id)
            if run.tags.get(TAG_OF):
                events.append(outcome_row(run.tags[TAG_OF], outcome="failed_again", at=now,
                                          retry_run_id=run.run_id))
                watch.pop(run.tags[TAG_OF], None)
            evidence = gather_evidence(instance, run)
            diagnosis = classifier.classify(evidence)
            failed_ops = [e.step for e in evidence.errors]
            if events_so_far is None:  # the log is read once per tick, and only when needed
                events_so_far = log.read()
            prior = _prior_retries(events_so_far, evidence.root_run_id)
            decision = policy.decide(diagnosis, evidence, op_config=effective_op_config(run, failed_ops),
                                     prior_by_category=prior, resumable_ops=RESUMABLE_OPS)
            events.append(decision_row(evidence, decision, now))
            msg = (f"run {run.run_id[:8]} ({run.job_name} {evidence.partition or ''}) failed: "
                   f"{diagnosis.category.value} [{diagnosis.rule}] -> {decision.action.value}: {decision.reason}")
            if decision.retry:
                context.log.info(msg)
                selection = _remaining_selection(context, instance, run)
                pending.append({**retry_request(run, decision, selection),
                                "due": (now + dt.timedelta(seconds=decision.delay_s)).isoformat()})
            else:
                context.log.error(msg + f"\n{evidence.summary()}")

        # 2. retries whose backoff is over
        requests, still = [], []
        for req in pending:
            if dt.datetime.fromisoformat(req["due"]) <= now:
                requests.append(_to_run_request(req))
                watch[req["decision_id"]] = now.isoformat()
            else:
                still.append(req)

        # 3. outcomes of retries requested on earlier ticks
        for decision_id in list(watch):
            done = instance.get_run_records(
                filters=dg.RunsFilter(tags={TAG_OF: decision_id},
                                      statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED]),
                limit=1)
            if done:
                r = done[0].dagster_run
                outcome = "healed" if r.status == dg.DagsterRunStatus.SUCCESS else "canceled"
                events.append(outcome_row(decision_id, outcome=outcome, at=now, retry_run_id=r.run_id))
                watch.pop(decision_id)

        asset_events = []
        if events:
            log.append(events)
            asset_events.append(log_materialization(log.decisions(), events, log.uri))
        cursor = json.dumps({"since": newest.isoformat(), "seen": seen[-500:], "pending": still,
                             "watch": watch}, sort_keys=True)
        if not requests and not asset_events:
            context.update_cursor(cursor)
            return dg.SkipReason("no new failed runs" + (f"; {len(still)} retries waiting for their "
                                                         "backoff" if still else ""))
        return dg.SensorResult(run_requests=requests, asset_events=asset_events, cursor=cursor)

    return run_failure_remediation_sensor


def _prior_retries(events, root_run_id: str) -> dict[str, int]:
    """Retries already decided for `root_run_id`, per category (`events`: RemediationLog.read())."""
    import polars as pl

    if events.height == 0:
        return {}
    done = events.filter((pl.col("event") == "decision") & (pl.col("root_run_id") == root_run_id)
                         & pl.col("retry"))
    return {r["category"]: r["len"] for r in done.group_by("category").len().iter_rows(named=True)}


def _remaining_selection(context: dg.SensorEvaluationContext, instance: dg.DagsterInstance,
                         run: dg.DagsterRun) -> list[dg.AssetKey] | None:
    """The run's assets that it did not materialize: the retry starts where the run broke."""
    selected = set(run.asset_selection or ())
    if not selected and context.repository_def is not None:
        try:
            selected = set(context.repository_def.get_job(run.job_name).asset_layer.selected_asset_keys)
        except Exception:  # a job this code location no longer has: retry it whole
            return None
    remaining = selected - materialized_keys(instance, run.run_id)
    return sorted(remaining, key=lambda k: k.to_user_string()) or None


run_failure_remediation_sensor = build_remediation_sensor()
