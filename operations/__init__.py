"""Operations: diagnose a failed run and decide what to do about it; keep every decision in a
Delta log.

Plain Python, no Dagster: the sensor in ``orchestration/remediation.py`` gathers the evidence of
a failed run (its step errors, failed checks, config, tags) into a ``FailureEvidence``, asks a
``FailureClassifier`` for a ``Diagnosis`` (``operations.diagnosis``), asks the
``RemediationPolicy`` for a ``Decision`` (``operations.policy``), and records it with the
``RemediationLog`` (``operations.remediation_log``); evidence is redacted before it is stored or
shown (``operations.redaction``).

The classifier is an interface: ``RuleClassifier`` is ordered regular-expression rules over
the error class names and messages; a learned classifier can replace it, trained on the log
(``evidence`` -> ``category``, with ``outcome`` telling which decisions healed the run).
"""
