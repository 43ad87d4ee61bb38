"""Dagster software-defined assets, one module per stage of the flow.

Modules expose ``build_*`` factories that take the partitions definition from
``orchestration`` (so nothing here imports orchestration, and nothing runs at import time).
"""
