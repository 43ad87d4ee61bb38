"""What to do about a diagnosis: bounded retries per category and in all, with backoff; smaller
batches or fewer workers after running out of memory; resuming from the last checkpoint after a
lost worker; a report (no retry) for bad data and configuration or code errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping

from operations.diagnosis import Category, Diagnosis, FailureEvidence


class Action(str, Enum):
    RETRY_WITH_BACKOFF = "retry_with_backoff"
    RETRY_SMALLER = "retry_with_smaller_batch_or_fewer_workers"
    RESUME_FROM_CHECKPOINT = "resume_from_last_checkpoint"
    REPORT = "report_no_retry"
    GIVE_UP = "give_up_retries_exhausted"


@dataclass(frozen=True)
class Decision:
    diagnosis: Diagnosis
    action: Action
    retry: bool
    attempt: int  # this retry's number (1 = first retry); 0 when not retried
    delay_s: float = 0.0
    config_patch: Mapping[str, Any] = field(default_factory=dict)  # op name -> {knob: value}
    reason: str = ""

    @property
    def page(self) -> bool:
        """A person must look: nothing will be retried."""
        return not self.retry


# Knobs that shrink memory, per op config: (field, how to shrink, floor).
SHRINK_KNOBS: tuple[tuple[str, str, int], ...] = (
    ("users_per_batch", "halve", 32),
    ("batch_size", "halve", 128),
    ("num_workers", "decrement", 1),
)


@dataclass(frozen=True)
class RemediationPolicy:
    """Bounded retries: at most `max_retries[category]` per root run, and `max_total` in all."""

    max_retries: Mapping[Category, int] = field(default_factory=lambda: {
        Category.OUT_OF_MEMORY: 2,
        Category.TRANSIENT: 3,
        Category.LOST_WORKER: 2,
        Category.UNKNOWN: 1,  # one more try for the unexplained, then a person looks
    })
    max_total: int = 4
    backoff_s: float = 30.0  # first delay; multiplied by `backoff_factor` per attempt
    backoff_factor: float = 4.0
    max_backoff_s: float = 1800.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * self.backoff_factor ** max(attempt - 1, 0), self.max_backoff_s)

    def decide(
        self,
        diagnosis: Diagnosis,
        evidence: FailureEvidence,
        *,
        op_config: Mapping[str, Mapping[str, Any]] | None = None,
        prior_by_category: Mapping[str, int] | None = None,
        resumable_ops: Iterable[str] = (),
    ) -> Decision:
        """op_config: the failed run's effective config of each op that failed (defaults filled),
        prior_by_category: retries already made for this root run, per category,
        resumable_ops: ops that take a `resume_run_id` (training with Ray checkpoints)."""
        cat = diagnosis.category
        prior = dict(prior_by_category or {})
        attempt = evidence.attempt + 1
        limit = self.max_retries.get(cat, 0)
        if limit == 0:
            why = {
                Category.DATA_QUALITY: "bad data is not fixed by running again: the failing checks "
                                       "and rows are in the evidence",
                Category.CONFIG_OR_CODE: "a configuration or code error fails the same way again",
            }.get(cat, "no retry for this category")
            return Decision(diagnosis, Action.REPORT, False, 0, reason=why)
        if prior.get(cat.value, 0) >= limit or evidence.attempt >= self.max_total:
            return Decision(diagnosis, Action.GIVE_UP, False, 0,
                            reason=f"{prior.get(cat.value, 0)} {cat.value} retries already made for "
                                   f"this run (limit {limit}, {self.max_total} in all)")
        delay = self.delay(attempt)
        if cat is Category.OUT_OF_MEMORY:
            patch = shrink(op_config or {})
            if not patch:
                return Decision(diagnosis, Action.GIVE_UP, False, 0,
                                reason="out of memory, and the failed step has no batch size or "
                                       "worker count left to shrink")
            return Decision(diagnosis, Action.RETRY_SMALLER, True, attempt, delay, patch,
                            reason="retry with " + ", ".join(f"{op}.{k}={v}" for op, kv in patch.items()
                                                             for k, v in kv.items()))
        if cat is Category.LOST_WORKER:
            root = evidence.root_run_id or evidence.run_id
            patch = {op: {"resume_run_id": root} for op in resumable_ops if op in (op_config or {})}
            return Decision(diagnosis, Action.RESUME_FROM_CHECKPOINT, True, attempt, delay, patch,
                            reason="retry; training resumes from the last Ray checkpoint of run "
                                   f"{root[:8]}" if patch else "retry (the lost worker's step holds "
                                   "no checkpoint: it is re-run whole)")
        return Decision(diagnosis, Action.RETRY_WITH_BACKOFF, True, attempt, delay,
                        reason=f"retry in {delay:.0f} s")


def shrink(op_config: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Smaller batches / fewer workers for every failed op that has such knobs above their floor."""
    patch: dict[str, dict[str, Any]] = {}
    for op, cfg in op_config.items():
        for knob, how, floor in SHRINK_KNOBS:
            value = cfg.get(knob)
            if not isinstance(value, int) or value <= floor:
                continue
            patch.setdefault(op, {})[knob] = max(floor, value // 2 if how == "halve" else value - 1)
    return patch


def merge_run_config(run_config: Mapping[str, Any], patch: Mapping[str, Mapping[str, Any]]) -> dict:
    """`run_config` with `patch` (op -> {knob: value}) applied under ops.<op>.config."""
    out = json.loads(json.dumps(run_config or {}))
    for op, knobs in patch.items():
        cfg = out.setdefault("ops", {}).setdefault(op, {}).setdefault("config", {})
        cfg.update(knobs)
    return out


__all__ = ["Action", "Decision", "RemediationPolicy", "SHRINK_KNOBS", "merge_run_config", "shrink"]
