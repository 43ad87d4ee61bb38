"""Run failing jobs for real and drive the remediation sensor over them, as the daemon would:
evaluate a tick, launch what it requests, repeat until it asks for nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg


@dataclass
class Harness:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    sensor: dg.SensorDefinition
    resources: dict
    cursor: str | None = None
    launched: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    def run(self, job_name: str, **kwargs) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(instance=self.instance, raise_on_error=False, **kwargs)

    def tick(self):
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                      repository_def=self.defs.get_repository_def(),
                                      resources=self.resources)
        result = self.sensor(ctx)
        if isinstance(result, dg.SensorResult):
            self.cursor = result.cursor
            for ev in result.asset_events:  # what the daemon does with a sensor's asset events
                self.instance.report_runless_asset_event(ev)
            return list(result.run_requests or [])
        self.cursor = ctx.cursor
        return []

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            instance=self.instance, run_config=request.run_config, tags=request.tags,
            partition_key=request.partition_key, asset_selection=request.asset_selection,
            raise_on_error=False)
        self.launched.append(result)
        return result

    def settle(self, max_ticks: int = 12, before_launch=None) -> int:
        """Tick and launch until the sensor requests nothing; returns the number of runs launched."""
        n = 0
        for _ in range(max_ticks):
            requests = self.tick()
            if not requests:  # this tick also recorded the outcomes of the last runs
                return n
            for req in requests:
                if before_launch is not None:
                    before_launch(req)
                self.launch(req)
                n += 1
        raise AssertionError(f"the sensor still requested runs after {max_ticks} ticks")
