"""Diagnose a failed run and decide what to do about it; keep every decision in a Delta log.

No Dagster here: the sensor in ``orchestration/remediation.py`` gathers the evidence of a failed
run (its step errors, failed checks, config, tags) into a :class:`FailureEvidence`, asks a
:class:`FailureClassifier` for a :class:`Diagnosis`, asks the :class:`RemediationPolicy` for a
:class:`Decision`, and records it with :class:`RemediationLog`.

The classifier is an interface: :class:`RuleClassifier` is ordered regular-expression rules over
the error class names and messages; a learned classifier can replace it, trained on the log
(``evidence`` -> ``category``, with ``outcome`` telling which decisions healed the run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping, Protocol, Sequence

import pyarrow as pa


class Category(str, Enum):
    OUT_OF_MEMORY = "out_of_memory"
    TRANSIENT = "transient_storage_or_network"
    LOST_WORKER = "lost_ray_worker"
    DATA_QUALITY = "data_quality"
    CONFIG_OR_CODE = "config_or_code"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class StepError:
    step: str
    classes: tuple[str, ...]  # exception class names, outermost first, through the cause chain
    message: str  # the messages of that chain, joined
    stack_tail: str = ""  # the last lines of the innermost stack (where it broke)


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    check: str
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)  # counts, sample rows


@dataclass(frozen=True)
class FailureEvidence:
    run_id: str
    job_name: str
    partition: str | None = None  # a day, or "start..end" for a range run
    errors: tuple[StepError, ...] = ()
    failed_checks: tuple[FailedCheck, ...] = ()  # blocking (ERROR) checks that failed in the run
    run_failure: str = ""  # the run-level failure message (a killed run worker, ...)
    attempt: int = 0  # remediation retries already made for this run's root
    root_run_id: str = ""

    def text(self) -> str:
        parts = [self.run_failure]
        for e in self.errors:
            parts += [" ".join(e.classes), e.message, e.stack_tail]
        return "\n".join(p for p in parts if p)

    def summary(self, limit: int = 1500) -> str:
        """What a person reads: the failed steps and their errors, secrets redacted."""
        lines = [f"{e.step}: {e.classes[0] if e.classes else 'Error'}: {e.message}" for e in self.errors]
        lines += [f"check {c.asset}:{c.check} failed: {c.description}" for c in self.failed_checks]
        if self.run_failure and not self.errors:
            lines.append(self.run_failure)
        text = redact("\n".join(lines))
        return text if len(text) <= limit else text[:limit] + " ..."


@dataclass(frozen=True)
class Diagnosis:
    category: Category
    rule: str  # which rule (or model) decided
    matched: str  # the piece of evidence that decided it
    classifier: str = "rules-v1"


class FailureClassifier(Protocol):
    """Anything that maps the evidence of a failed run to a diagnosis (rules now, a model later)."""

    name: str

    def classify(self, evidence: FailureEvidence) -> Diagnosis: ...


@dataclass(frozen=True)
class Rule:
    name: str
    category: Category
    classes: str = ""  # regex on the exception class names
    message: str = ""  # regex on the messages and stack tails

    def match_class(self, evidence: FailureEvidence) -> str | None:
        if not self.classes:
            return None
        cls_re = re.compile(self.classes)
        for e in evidence.errors:
            for c in e.classes:
                if cls_re.fullmatch(c):
                    return f"{e.step}: {c}"
        return None

    def match_message(self, evidence: FailureEvidence) -> str | None:
        msg_re = re.compile(self.message, re.IGNORECASE) if self.message else None
        if msg_re and (m := msg_re.search(evidence.text())):
            start = max(m.start() - 60, 0)
            return evidence.text()[start:m.end() + 60].replace("\n", " ").strip()
        return None


# Order matters: the first rule that matches decides. Definite causes come before the broad
# "I/O error" family, so a read-only disk or a bad key is not retried as a network blip.
RULES: tuple[Rule, ...] = (
    Rule("blocking_check_failed", Category.DATA_QUALITY,
         classes=r"DagsterAssetCheckFailedError|QualityGateError",
         message=r"blocking checks? (?:failed|.*did not pass)|blocking check .* failed"),
    Rule("bad_landing_input", Category.DATA_QUALITY,
         classes=r"LandingFileError|MissingLandingError|ContractError",
         message=r"landing file .* (?:cannot be read|is truncated|unreadable)|no landing files"),
    Rule("out_of_memory", Category.OUT_OF_MEMORY,
         classes=r"\w*MemoryError|OutOfMemoryException",
         message=r"out of memory|unable to allocate|cannot allocate memory|std::bad_alloc|running low on memory|"
                 r"memory limit|oom[- ]?kill|exit(?:ed)? (?:with )?code 137|-9 \(SIGKILL\).*memory"),
    Rule("lost_ray_worker", Category.LOST_WORKER,
         classes=r"ActorDiedError|RayActorError|WorkerCrashedError|NodeDiedError|"
                 r"ActorUnavailableError|WorkerGroupError",
         message=r"actor died|worker (?:died|crashed|exited|unexpectedly exit)|"
                 r"node (?:died|was removed)|lost (?:its|the) (?:ray )?worker|"
                 r"ray training run .* failed: .*(?:SIGKILL|killed|exit code|exited)"),
    Rule("read_only_or_full_disk", Category.CONFIG_OR_CODE, classes=r"StorageNotWritableError",
         message=r"read-only file system|no space left on device|errno 30\b|errno 28\b"),
    Rule("credentials_or_permissions", Category.CONFIG_OR_CODE,
         classes=r"PermissionError|NoCredentialsError|ClientAuthenticationError",
         message=r"access ?denied|invalidaccesskeyid|signaturedoesnotmatch|permission denied|"
                 r"forbidden|expiredtoken|no credentials"),
    Rule("missing_champion", Category.CONFIG_OR_CODE, message=r"no champion model"),
    Rule("transient_storage_or_network", Category.TRANSIENT,
         classes=r"ConnectionError|ConnectionResetError|ConnectionRefusedError|ConnectionAbortedError|"
                 r"TimeoutError|BrokenPipeError|EndpointConnectionError|ReadTimeoutError|"
                 r"ConnectTimeoutError|CommitFailedError|ConcurrentWriteError|ConcurrentModificationError",
         message=r"connection (?:refused|reset|closed|aborted)|timed? ?out|temporar(?:y|ily)|"
                 r"service unavailable|\b50[234]\b|slow ?down|throttl|error sending request|"
                 r"dns error|broken pipe|could not set lock on file|conflicting (?:concurrent )?"
                 r"(?:write|commit|transaction)|too many requests|\b429\b|try again"),
    Rule("invalid_config_or_code", Category.CONFIG_OR_CODE,
         classes=r"DagsterInvalidConfigError|DagsterInvalidDefinitionError|ValidationError|"
                 r"ValueError|TypeError|KeyError|AttributeError|NameError|ImportError|ModuleNotFoundError|"
                 r"SyntaxError|NotImplementedError|IndexError|ZeroDivisionError|AssertionError|"
                 r"ColumnNotFoundError|SchemaError|SchemaFieldNotFoundError|InvalidOperationError|"
                 r"DbtCompilationError",
         message=r"compilation error|parsing error|binder error|parser error|catalog error|"
                 r"invalid config|missing required config|unexpected config|must be|expected .* got"),
)


class RuleClassifier:
    """The first matching rule of :data:`RULES` (or a given list) decides; no match: unknown."""

    name = "rules-v1"

    def __init__(self, rules: Sequence[Rule] = RULES) -> None:
        self.rules = tuple(rules)

    def classify(self, evidence: FailureEvidence) -> Diagnosis:
        if evidence.failed_checks:
            c = evidence.failed_checks[0]
            return Diagnosis(Category.DATA_QUALITY, "blocking_check_failed",
                             f"{c.asset}:{c.check}", self.name)
        # Exception types first, over all rules: an ActorDiedError whose message lists "the OOM
        # killer" among possible causes is a lost worker, not a diagnosed out-of-memory.
        for match in (Rule.match_class, Rule.match_message):
            for rule in self.rules:
                matched = match(rule, evidence)
                if matched is not None:
                    return Diagnosis(rule.category, rule.name, redact(matched)[:300], self.name)
        return Diagnosis(Category.UNKNOWN, "no_rule_matched", "", self.name)


# ---------------------------------------------------------------------------------------------
# Policy: what to do about a diagnosis

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


# ---------------------------------------------------------------------------------------------
# Redaction: evidence is stored and shown; secrets must not be

_SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY)", re.IGNORECASE)
_SECRET_PATTERNS = (
    re.compile(r"(?i)((?:aws_)?secret_access_key|aws_session_token|password|token|secret)"
               r"(\s*[=:]\s*['\"]?)([^'\"\s,&}]+)"),
    re.compile(r"(?i)(\w+://[^/\s:@]+:)([^@\s/]+)(@)"),  # scheme://user:password@host
    re.compile(r"\bA(?:K|S)IA[A-Z0-9]{16}\b"),  # AWS access key ids (long-term, temporary)
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clean(text: str) -> str:
    """Without terminal colour codes (object_store's error chains carry them)."""
    return _ANSI.sub("", text)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with secret values from the environment and credential-looking pieces masked."""
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if value and len(value) >= 4 and _SECRET_ENV.search(key):
            text = text.replace(value, "***")
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    return _SECRET_PATTERNS[2].sub("<aws-access-key-id>", text)


# ---------------------------------------------------------------------------------------------
# The log

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

        from lakehouse import delta

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


__all__ = [
    "Action", "Category", "Decision", "clean", "Diagnosis", "FailedCheck", "FailureClassifier",
    "FailureEvidence", "LOG_SCHEMA", "RULES", "RemediationLog", "RemediationPolicy", "Rule",
    "RuleClassifier", "StepError", "decision_row", "merge_run_config", "outcome_row", "redact",
    "shrink",
]
