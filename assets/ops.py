"""Operations: the remediation log, an external asset the failure sensor reports to."""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg

REMEDIATION_LOG_KEY = dg.AssetKey(["ops", "remediation_log"])
GROUP = "ops"


def remediation_log_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        key=REMEDIATION_LOG_KEY,
        group_name=GROUP,
        kinds={"delta"},
        description="Every diagnosis of a failed run (category, rule, evidence), the decision taken "
        "(retry with backoff, smaller batch, resume from checkpoint, or report to a person) and its "
        "outcome. Written by `run_failure_remediation_sensor` to <lakehouse>/ops/remediation_log.",
    )


def _cell(value: Any, limit: int = 80) -> str:
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_materialization(decisions, new_events: list[Mapping[str, Any]], uri: str) -> dg.AssetMaterialization:
    """What the UI shows after a sensor tick wrote to the log: the tick's events and the latest
    decisions with their outcomes (``decisions``: RemediationLog.decisions())."""
    recent = decisions.tail(15).reverse() if decisions.height else decisions
    header = "| at | job | partition | category | action | attempt | outcome | evidence |\n|---|---|---|---|---|---|---|---|\n"
    body = "\n".join(
        f"| {_cell(r['at'], 19)} | {_cell(r['job_name'], 30)} | {_cell(r['partition'], 24)} | "
        f"{_cell(r['category'])} | {_cell(r['action'])} | {r['attempt']} | {_cell(r['outcome'])} | "
        f"{_cell(r['evidence'], 120)} |"
        for r in recent.iter_rows(named=True))
    counts: dict[str, int] = {}
    for r in decisions.iter_rows(named=True) if decisions.height else []:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    needs = [e for e in new_events if e.get("outcome") == "needs_a_person"]
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(uri),
        "events_this_tick": len(new_events),
        "decisions": int(decisions.height),
        "outcomes": dg.MetadataValue.json(counts),
        "needs_a_person": len(needs),
        "latest_decisions": dg.MetadataValue.md(header + body),
    }
    last = next((e for e in reversed(new_events) if e.get("event") == "decision"), None)
    if last is not None:
        if last.get("failed_run_id"):
            metadata["last_failed_run"] = dg.MetadataValue.dagster_run(last["failed_run_id"])
        metadata.update({
            "last_category": last["category"],
            "last_action": last["action"],
            "last_reason": last["reason"],
            "last_evidence": dg.MetadataValue.md(f"```\n{last['evidence']}\n```"),
        })
    description = (f"{len(needs)} failure(s) need a person: "
                   + "; ".join(f"{e['job_name']} {e['partition'] or ''}: {e['category']}" for e in needs)
                   ) if needs else None
    return dg.AssetMaterialization(asset_key=REMEDIATION_LOG_KEY, metadata=metadata, description=description)
