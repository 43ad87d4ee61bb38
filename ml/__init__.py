"""Plain Python/PyTorch, no Dagster: gold tables -> tensors, the DLRM, training, metrics, scoring.

Usable and testable without the orchestrator; `assets/` calls into it, never the reverse.
"""
