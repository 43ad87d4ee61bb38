"""Declarative automation: what reruns by itself when data or code upstream changes.

* `rebuild_when_changed()` (dbt models, gold tables): a partition that was built reruns when a
  partition it depends on is updated (e.g. a day re-ingested into bronze) or when the asset's
  code version changes (dbt models: the checksum of their SQL, so a data engineer's edit marks
  the model and everything downstream of it). Partitions never built are not filled in (that is
  the schedule's and the landing sensor's job), and nothing starts while an upstream is running.
* `eager_latest()` (serving assets): Dagster's eager condition: the latest day's partition is
  rescored and republished when its inputs update.

Both only act while the automation sensor (`orchestration.sensors`) is running.
"""

import dagster as dg


def rebuild_when_changed() -> dg.AutomationCondition:
    changed = dg.AutomationCondition.any_deps_updated() | dg.AutomationCondition.code_version_changed()
    return (
        ~dg.AutomationCondition.missing()
        & changed.since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("rebuild when upstream data or code changed")


def eager_latest() -> dg.AutomationCondition:
    return dg.AutomationCondition.eager()
