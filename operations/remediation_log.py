"""The remediation log: every decision and its outcome, appended to a Delta table
(``<lakehouse>/ops/remediation_log``) idempotently; the rows the sensor writes."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import pyarrow as pa

from operations.diagnosis import Category, FailureEvidence
from operations.policy import Action, Decision
from operations.redaction import redact


LOG_SCHEMA = pa.schema([
    ("event_id", pa.string()),  # decision_id + ":" + event: the key that makes appends idempotent
    ("decision_id", pa.string()),  # the failed run's id
    ("event", pa.string()),  # decision | retry_requested | outcome
    ("at", pa.timestamp("us", tz="UTC")),
    ("job_name", pa.string()),
    ("partition", pa.string()),
    ("failed_run_id", pa.string()),
    ("root_run_id", pa.string()),
    ("attempt", pa.int32()),
    ("category", pa.string()),
    ("rule", pa.string()),
    ("classifier", pa.string()),
    ("matched", pa.string()),
    ("evidence", pa.string()),  # redacted summary
    ("failed_checks", pa.string()),  # JSON: [{asset, check, description, metadata}]
    ("action", pa.string()),
    ("retry", pa.bool_()),
    ("delay_s", pa.float64()),
    ("config_patch", pa.string()),  # JSON
    ("reason", pa.string()),
    ("retry_run_id", pa.string()),
    ("outcome", pa.string()),  # pending | healed | failed_again | needs_a_person
])


def decision_row(evidence: FailureEvidence, decision: Decision, at: dt.datetime) -> dict[str, Any]:
    d = decision.diagnosis
    return {
        "event_id": f"{evidence.run_id}:decision", "decision_id": evidence.run_id, "event": "decision",
        "at": at, "job_name": evidence.job_name, "partition": evidence.partition,
        "failed_run_id": evidence.run_id, "root_run_id": evidence.root_run_id or evidence.run_id,
        "attempt": decision.attempt, "category": d.category.value, "rule": d.rule,
        "classifier": d.classifier, "matched": d.matched, "evidence": evidence.summary(),
        "failed_checks": redact(json.dumps([asdict(c) for c in evidence.failed_checks], default=str))[:4000],
        "action": decision.action.value, "retry": decision.retry, "delay_s": decision.delay_s,
        "config_patch": json.dumps(decision.config_patch, sort_keys=True), "reason": decision.reason,
        "retry_run_id": None, "outcome": "pending" if decision.retry else "needs_a_person",
    }


def report_row(*, event_id: str, job_name: str, partition: str | None, rule: str, matched: str,
               evidence: str, reason: str, at: dt.datetime,
               category: Category = Category.DATA_QUALITY) -> dict[str, Any]:
    """A problem found by a sensor rather than a failed run (e.g. a landing day that never
    completed): logged as a decision that needs a person, nothing retried."""
    return {
        "event_id": event_id, "decision_id": event_id, "event": "decision", "at": at,
        "job_name": job_name, "partition": partition, "failed_run_id": None, "root_run_id": None,
        "attempt": 0, "category": category.value, "rule": rule, "classifier": "sensor",
        "matched": matched, "evidence": redact(evidence)[:4000], "failed_checks": "[]",
        "action": Action.REPORT.value, "retry": False, "delay_s": 0.0, "config_patch": "{}",
        "reason": reason, "retry_run_id": None, "outcome": "needs_a_person",
    }


def outcome_row(decision_id: str, *, outcome: str, at: dt.datetime, retry_run_id: str | None,
                event: str = "outcome") -> dict[str, Any]:
    return {"event_id": f"{decision_id}:{event}", "decision_id": decision_id, "event": event,
            "at": at, "retry_run_id": retry_run_id, "outcome": outcome}


class RemediationLog:
    """Append-only Delta table of decisions and their outcomes (``<lakehouse>/ops/remediation_log``).

    Every row has an ``event_id``; writing merges on it, so a sensor tick that is evaluated twice
    (a crash between the write and the cursor update) records each event once.
    """

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = uri
        self.storage_options = dict(storage_options or {})

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        from deltalake import DeltaTable, write_deltalake
        from deltalake.exceptions import TableNotFoundError

        table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in LOG_SCHEMA} for r in rows],
                                     schema=LOG_SCHEMA)
        opts = self.storage_options or None
        try:
            dt_ = DeltaTable(self.uri, storage_options=opts)
        except TableNotFoundError:
            write_deltalake(self.uri, table, mode="append", storage_options=opts)
            return table.num_rows
        metrics = (dt_.merge(table, predicate="t.event_id = s.event_id", source_alias="s",
                             target_alias="t")
                   .when_not_matched_insert_all().execute())
        return int(metrics.get("num_target_rows_inserted", 0))

    def read(self):
        """All events as a polars frame (empty when nothing was logged yet)."""
        import polars as pl

        from lakehouse.io import delta

        df = delta.read(self.uri, storage_options=self.storage_options)
        return df if df.height else pl.DataFrame(schema={f.name: pl.Utf8 for f in LOG_SCHEMA})

    def decisions(self):
        """One row per decision with its latest outcome and retry run."""
        import polars as pl

        events = self.read()
        if events.height == 0:
            return events
        decisions = events.filter(pl.col("event") == "decision").drop("retry_run_id", "outcome")
        latest = (events.filter(pl.col("event") != "decision")
                  .sort("at").group_by("decision_id")
                  .agg(pl.col("retry_run_id").drop_nulls().last(), pl.col("outcome").last()))
        first = events.filter(pl.col("event") == "decision").select("decision_id", "outcome")
        out = decisions.join(latest, on="decision_id", how="left").join(
            first.rename({"outcome": "initial"}), on="decision_id", how="left")
        return out.with_columns(pl.coalesce("outcome", "initial").alias("outcome")).drop("initial").sort("at")


__all__ = ["LOG_SCHEMA", "RemediationLog", "decision_row", "outcome_row", "report_row"]
