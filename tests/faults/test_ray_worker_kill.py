"""Fault injection: the Ray Train worker is SIGKILLed from outside in the middle of training.

A thread of the test waits until Train V2's controller has registered a checkpoint (it writes
`<storage_path>/<run_name>/checkpoint_manager_snapshot.json`), looks the worker's PID up in the
cluster's actor table and sends it SIGKILL. With retries left Ray restarts the worker group
within the same `train_on_ray` call; without, the call fails and a rerun with the same run_name
resumes. Either way training resumes from the last registered checkpoint and the history holds
every epoch exactly once, and from the checkpoint's weights and optimizer state: every epoch's
loss and the final weights are those of the same job trained without a fault.

Real Ray (a local 2-CPU instance), one gloo worker, the tiny gold lakehouse of tests/ml (both
fixtures in tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ml.training_job import TrainingJob, fit_encoders
from tests.ml.ray_job import check_state_dict as _check_state_dict
from tests.ml.ray_job import tiny_job as _job

pytestmark = pytest.mark.slow

# Each epoch waits for the controller's poll of its report (0.5 s in ray_local, the report
# queue holds one result), so epochs 1-4 leave ~2 s after the first checkpoint to kill in.
EPOCHS = 5
SNAPSHOT = "checkpoint_manager_snapshot.json"


@pytest.fixture(scope="module")
def job(ray_gold_lake) -> TrainingJob:
    return _job(ray_gold_lake, epochs=EPOCHS)


@pytest.fixture(scope="module")
def encoders(job):
    return fit_encoders(job)


# the job run start to finish in one process, as a Ray Train worker runs it (one torch/OpenMP
# thread, one polars thread: the same batches in the same order)
_UNINTERRUPTED = """
import pickle, sys, torch
torch.set_num_threads(1)
from ml.features import Encoders
from ml.training_job import run_training
job = pickle.loads(open(sys.argv[1], "rb").read())
out = run_training(job, Encoders.from_json(open(sys.argv[2]).read()))
torch.save({"state_dict": out.state_dict, "history": out.history}, sys.argv[3])
"""


@pytest.fixture(scope="module")
def uninterrupted(job, encoders, tmp_path_factory) -> dict:
    """{state_dict, history} of the same job trained without a fault (~5 s: no Ray start-up)."""
    d = tmp_path_factory.mktemp("uninterrupted")
    (d / "job.pkl").write_bytes(pickle.dumps(job))
    (d / "encoders.json").write_text(encoders.to_json())
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _UNINTERRUPTED, str(d / "job.pkl"), str(d / "encoders.json"),
                    str(d / "out.pt")], check=True, capture_output=True, env=env,
                   cwd=Path(__file__).resolve().parents[2])
    return torch.load(d / "out.pt", weights_only=False)


def assert_as_uninterrupted(out, ref: dict) -> None:
    """A run resumed from its checkpoint's weights and optimizer state ends where the run
    without a fault ends: every epoch's training loss (those before the kill come from the
    checkpoint's history, the rest were trained after the restart) and every weight."""
    losses = [h["loss"] for h in out.history]
    assert losses == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-6, abs=1e-9), (
        f"per-epoch loss after the resume differs from the uninterrupted run: {losses} vs "
        f"{[h['loss'] for h in ref['history']]}")
    assert set(out.state_dict) == set(ref["state_dict"])
    for key, want in ref["state_dict"].items():
        got = out.state_dict[key]
        diff = float((got.double() - want.double()).abs().max()) if got.shape == want.shape else None
        assert diff is not None and diff <= 1e-6, f"{key}: final weights differ (max |diff| {diff})"


def registered_epoch(run_dir: Path) -> int | None:
    """Epoch of the latest checkpoint the controller has registered (None: none yet).

    Not the checkpoint directories: a worker uploads its checkpoint before the controller takes
    the report, and a report the controller never took is not resumed from.
    """
    try:
        state = json.loads((run_dir / SNAPSHOT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return None
    latest = state.get("latest_checkpoint_result") or {}
    epoch = (latest.get("metrics") or {}).get("epoch")
    return None if epoch is None else int(epoch)


def train_worker_pids() -> list[int]:
    """PIDs of the live Ray Train workers of this test's cluster.

    The GCS actor table: `ray.util.state.list_actors` needs the dashboard, which `init_ray`
    does not start, and a process-name scan could hit another Ray instance on the machine.
    """
    import ray

    actors = ray._private.state.actors(actor_state_name="ALIVE").values()
    return [a["Pid"] for a in actors if a["ActorClassName"] == "RayTrainWorker" and a["Pid"]]


class WorkerKiller(threading.Thread):
    """SIGKILLs one of the run's `workers` Ray Train workers (the last PID of the actor table)
    once a checkpoint of the run is registered."""

    def __init__(self, run_dir: Path, fault_drill, timeout_s: float = 240.0, workers: int = 1) -> None:
        super().__init__(daemon=True, name="ray-worker-killer")
        self.run_dir, self.fault_drill, self.timeout_s = run_dir, fault_drill, timeout_s
        self.workers = workers
        self.stop = threading.Event()
        self.killed_pid: int | None = None
        self.epoch_at_kill: int | None = None
        self.started = time.perf_counter()
        self.kill_after_s: float | None = None  # from the start of the run
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._hunt()
        except BaseException as exc:  # surfaced by the test after join()
            self.error = exc

    def _hunt(self) -> None:
        deadline = self.started + self.timeout_s
        pid = None
        while not self.stop.is_set() and time.perf_counter() < deadline:
            if pid is None:  # look it up before the checkpoint: the kill follows it at once
                pids = train_worker_pids()
                if len(pids) > self.workers:
                    raise AssertionError(f"expected {self.workers} Ray Train worker(s), found PIDs {pids}")
                pid = pids[-1] if len(pids) == self.workers else None
            epoch = registered_epoch(self.run_dir)
            if pid is not None and epoch is not None:
                os.kill(pid, signal.SIGKILL)
                self.fault_drill.injected()
                self.killed_pid, self.epoch_at_kill = pid, epoch
                self.kill_after_s = round(time.perf_counter() - self.started, 2)
                return
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        if self.error is not None:
            raise self.error
        assert self.killed_pid is not None, "the worker was never killed"
        # a kill after the last epoch would test nothing: the run must have been mid-way
        assert self.epoch_at_kill < EPOCHS - 1, f"killed after epoch {self.epoch_at_kill}"


def _assert_worker_dead(pid: int) -> None:
    import ray

    states = {a["State"] for a in ray._private.state.actors().values() if a["Pid"] == pid}
    assert states == {"DEAD"}, states


@pytest.mark.fault("Ray worker killed mid-training (retries left)")
def test_killed_worker_is_restarted_from_last_checkpoint(
    ray_local, job, encoders, uninterrupted, tmp_path, fault_drill
):
    from ml.ray_training import train_on_ray

    storage, run_name = tmp_path / "runs", "kill-retry"
    killer = WorkerKiller(storage / run_name, fault_drill)
    killer.start()
    try:
        out = train_on_ray(job, encoders, num_workers=1, storage_path=str(storage),
                           run_name=run_name, max_failures=1)
    finally:
        killer.stop.set()
    killer.finish()
    fault_drill.recovered()
    _assert_worker_dead(killer.killed_pid)

    # Resumed, not restarted from scratch. A report the controller was already taking when the
    # signal landed may still be registered: at most one epoch past the one seen before the kill.
    assert out.resumed_from_epoch is not None
    assert killer.epoch_at_kill <= out.resumed_from_epoch <= killer.epoch_at_kill + 1
    assert [h["epoch"] for h in out.history] == [float(e) for e in range(EPOCHS)]
    assert Path(out.checkpoint_path).parent == storage / run_name
    _check_state_dict(out, encoders, job)
    assert_as_uninterrupted(out, uninterrupted)
    fault_drill.detail.update(
        epoch_at_kill=killer.epoch_at_kill, resumed_from_epoch=out.resumed_from_epoch,
        kill_after_s=killer.kill_after_s, run_s=round(out.seconds, 2), epochs=EPOCHS,
    )


@pytest.mark.drill_only  # the same kill and resume as above, through a rerun: `make fault-drill`
@pytest.mark.fault("Ray worker killed mid-training (no retries left)")
def test_killed_worker_without_retries_fails_then_rerun_resumes(
    ray_local, job, encoders, uninterrupted, tmp_path, fault_drill
):
    from ml.ray_training import RayTrainingError, train_on_ray

    storage, run_name = tmp_path / "runs", "kill-rerun"
    run_dir = storage / run_name
    killer = WorkerKiller(run_dir, fault_drill)
    killer.start()
    try:
        with pytest.raises(RayTrainingError) as info:
            train_on_ray(job, encoders, num_workers=1, storage_path=str(storage),
                         run_name=run_name, max_failures=0)
    finally:
        killer.stop.set()
    killer.finish()
    error = str(info.value)
    fault_drill.detail["error"] = error
    assert f"{run_name!r} failed: rank 0: ActorDiedError: The actor died" in error
    assert "OOM" not in error  # Ray's guesses at a cause are cut: nothing ran out of memory
    _assert_worker_dead(killer.killed_pid)
    # the run is over: what the snapshot names now is all a rerun can resume from
    last_registered = registered_epoch(run_dir)
    assert last_registered is not None and last_registered >= killer.epoch_at_kill

    out = train_on_ray(job, encoders, num_workers=1, storage_path=str(storage),
                       run_name=run_name, max_failures=0)
    fault_drill.recovered()
    assert out.resumed_from_epoch == last_registered  # no registered checkpoint was lost
    assert [h["epoch"] for h in out.history] == [float(e) for e in range(EPOCHS)]
    _check_state_dict(out, encoders, job)
    assert_as_uninterrupted(out, uninterrupted)
    fault_drill.detail.update(
        epoch_at_kill=killer.epoch_at_kill, resumed_from_epoch=out.resumed_from_epoch,
        kill_after_s=killer.kill_after_s, rerun_s=round(out.seconds, 2), epochs=EPOCHS,
    )


@pytest.mark.extra  # two TorchTrainer runs of 2 workers: ~1.5 min on 2 cores
@pytest.mark.fault("one of two sharded (DMP) Ray workers killed mid-training")
def test_killed_sharded_worker_resumes_the_sharded_checkpoint(
    ray_local, job, encoders, tmp_path, fault_drill
):
    """2 workers shard the tables (fused DMP, DCP checkpoints): one is SIGKILLed after a
    checkpoint; Ray restarts both and they resume the sharded weights and fused optimizer state
    under the same layout, ending where the same 2-worker run without a fault ends."""
    from ml.checkpoint import read_info
    from ml.ray_training import train_on_ray

    storage = tmp_path / "runs"
    ref = train_on_ray(job, encoders, num_workers=2, storage_path=str(storage), run_name="ref")
    killer = WorkerKiller(storage / "kill-dmp", fault_drill, workers=2)
    killer.start()
    try:
        out = train_on_ray(job, encoders, num_workers=2, storage_path=str(storage),
                           run_name="kill-dmp", max_failures=1)
    finally:
        killer.stop.set()
    killer.finish()
    fault_drill.recovered()
    _assert_worker_dead(killer.killed_pid)
    assert out.resumed_from_epoch is not None
    assert killer.epoch_at_kill <= out.resumed_from_epoch <= killer.epoch_at_kill + 1
    assert [h["epoch"] for h in out.history] == [float(e) for e in range(EPOCHS)]
    info = read_info(out.checkpoint_path)
    assert info.meta["strategy"] == "cpu-dmp2" and "optimizer_state" not in info.meta
    _check_state_dict(out, encoders, job)
    assert_as_uninterrupted(out, {"state_dict": ref.state_dict, "history": ref.history})
    fault_drill.detail.update(
        epoch_at_kill=killer.epoch_at_kill, resumed_from_epoch=out.resumed_from_epoch,
        kill_after_s=killer.kill_after_s, run_s=round(out.seconds, 2), epochs=EPOCHS, workers=2,
    )
