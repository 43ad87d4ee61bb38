"""What went wrong in a failed run: its evidence (step errors, failed checks), the categories of
failure, and the classifier that maps evidence to a diagnosis (ordered rules over the error class
names and messages: :data:`RULES`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Protocol, Sequence

from operations.redaction import redact


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
         classes=r"DagsterAssetCheckFailedError|QualityGateError|AuditFailedError",
         message=r"blocking checks? (?:failed|.*did not pass)|blocking check .* failed"),
    Rule("bad_landing_input", Category.DATA_QUALITY,
         classes=r"LandingFileError|MissingLandingError|LandingManifestError|ManifestError|ContractError",
         message=r"landing file .* (?:cannot be read|is truncated|unreadable)|no landing files|"
                 r"do not match their manifest"),
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


__all__ = [
    "Category", "Diagnosis", "FailedCheck", "FailureClassifier", "FailureEvidence", "RULES", "Rule",
    "RuleClassifier", "StepError",
]
