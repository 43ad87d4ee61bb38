"""Run `ml.training_job.run_training` inside Ray Train workers, checkpoint every epoch, resume.

Typical use::

    init_ray(num_cpus=8)                       # or RAY_ADDRESS / address= for a cluster
    encoders = fit_encoders(job)
    out = train_on_ray(job, encoders, num_workers=2,
                       storage_path="/abs/path/ray_results", run_name="dlrm-2025-03-04")
    model = build_model(out.model_config, "reference"); model.load_state_dict(out.state_dict)

Each worker trains on its own share of the training days (`days_for_rank`). After every epoch
rank 0 writes the epoch's checkpoint (`ml.checkpoint`: plain weights, optimizer state, epoch,
every epoch's metrics so far, earlier attempts included, and the optimizer layout) into a fresh
directory and reports it to Ray Train (`ray.train.report(metrics, checkpoint=...)`); the other
ranks report the same metrics without a checkpoint. In Ray Train V2 every rank must call
`report` the same number of times (it is a barrier), and a checkpoint is registered when at
least one rank passes one, so `checkpoint=None` on the other ranks is the documented pattern
(docstring of `ray.train.report` in ray 2.60).

Resuming (Ray 2.60 runs Train V2 by default: `RAY_TRAIN_V2_ENABLED` defaults to on):

* worker failure within a run: `FailureConfig(max_failures=...)` restarts the worker group and
  `ray.train.get_checkpoint()` returns the last reported checkpoint; the worker passes it to
  `run_training(resume_from=...)`, which continues with the next epoch.
* the whole run restarted (driver crashed, the user runs again with the same `storage_path` and
  `run_name`): V2's CheckpointManager reads the run snapshot
  (`<storage_path>/<run_name>/checkpoint_manager_snapshot.json`) at start-up and hands the latest
  checkpoint to `get_checkpoint()` (`_maybe_load_state_from_storage` in
  `ray/train/v2/_internal/execution/checkpoint/checkpoint_manager.py`; the V2 fault-tolerance
  guide, "job driver fault tolerance": instantiate the trainer again with the same
  (storage_path, name)). `TorchTrainer(resume_from_checkpoint=...)` is deprecated in V2 and
  raises, so there is nothing to pass: the same code path as a worker retry applies. A rerun of
  a run that already finished trains no epoch and hands back the last checkpoint again.

Several workers (world size > 1), `train.fused=True` (the job's default): the tables are
sharded across the workers with TorchRec's DistributedModelParallel (table-wise on the CPU, the
fused FBGEMM kernel; `ml.optim.prepare_fused`), the dense layers replicated (DDP inside DMP).
What that takes (`ml.sharded`; seen with 2 gloo workers, torch 2.13, torchrec 1.8):

* every forward and backward is an all-to-all all ranks join: the ranks read different days,
  hence different numbers of batches, so they step in lockstep (a rank out of batches runs empty
  ones) and validate together, each on its share of the held-out batches (a rank-0-only
  validation hung in its first forward);
* no rank holds the whole model: the tables are gathered to rank 0 for `model.pt` (what the
  driver returns and MLflow logs), and the sharded model and fused optimizer state are saved
  with `torch.distributed.checkpoint` under `sharded/` of the checkpoint. Every rank reports its
  own directory: Ray Train V2 gives all ranks of one report the same checkpoint directory name
  (broadcast from rank 0) and uploads each rank's files into it, so the union is one checkpoint.

`train.fused=False` with several workers: DDP over full replicas (`ml.ddp.plain_keys_ddp`, DDP's
`Join` for the uneven batches); rank 0 saves the whole model.

A checkpoint's optimizer state resumes only under the same layout ("strategy" in its
checkpoint.json: cpu-fused, cpu-dmp2, cpu-ddp, gpu-...; a sharded one names its world size);
under another layout (e.g. a 1-worker run resumed with 2 workers) the weights, the epoch and the
history are restored and the optimizer starts afresh: the worker logs it and the checkpoint's
"optimizer_state" says so ("reset: ...").

`use_gpu=True`: without a CUDA device `train_on_ray` raises `ml.devices.DeviceUnavailableError`
before Ray starts. On CUDA each worker trains on `ray.train.torch.get_device()` over NCCL, the
planner's topology the GPU one; without the CUDA fbgemm-gpu the job trains the plain-PyTorch
model (`ml.devices.for_gpu`). Not verified here (no GPU on the development machine).

Ray Train consumes a report when its controller next polls the worker
(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, default 2 s): a crash within that window after a report
resumes from the checkpoint before it.

`ml` never imports dagster; `ray` is imported inside the functions, so importing this module is
cheap.

Over 400 lines: the launcher, the worker loop and the resume logic share the
checkpoint bookkeeping.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ml.allocator import allocator_env
from ml.checkpoint import copy_checkpoint, read_info, read_weights
from ml.ddp import plain_keys_ddp
from ml.devices import DeviceUnavailableError, for_gpu, require_cuda
from ml.features import Encoders
from ml.metrics import finite_or_nan
from ml.training_job import EpochEnd, TrainingJob, TrainingResult, model_config, run_training

logger = logging.getLogger(__name__)
_RAY_ENV_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


class RayTrainingError(RuntimeError):
    """Training failed inside the Ray workers (or the Train controller).

    `worker_errors` maps a rank to the root cause's one-line message (rank -1: the controller).
    """

    def __init__(self, message: str, worker_errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.worker_errors = dict(worker_errors or {})


# ---------------------------------------------------------------------------------------------
# Ray start-up


def init_ray(
    *,
    num_cpus: int | None = None,
    temp_dir: str | None = None,
    address: str | None = None,
    log_to_driver: bool = False,
) -> None:
    """Start (or connect to) Ray once; later calls do nothing.

    Sets RAY_AUTH_MODE=disabled and RAY_USAGE_STATS_ENABLED=0 unless already set, no dashboard,
    worker logs not forwarded to the driver (errors still surface as exceptions; the logs stay
    under the Ray temp dir). `address` (or RAY_ADDRESS) connects to a running cluster; then
    num_cpus and temp_dir belong to that cluster and are ignored. temp_dir: the root of Ray's
    session files (absolute and short: Unix socket paths are limited to ~107 characters).
    """
    for key, value in _RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(
        include_dashboard=False,
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
        # every worker of this job: polars' pages kept between two reads (`ml.allocator`)
        runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", **allocator_env()}},
    )
    if address:
        ray.init(address=address, **kwargs)
        return
    if temp_dir is not None:
        if not os.path.isabs(temp_dir):
            raise ValueError(f"temp_dir must be an absolute path, got {temp_dir!r}")
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = temp_dir
    ray.init(num_cpus=num_cpus, **kwargs)


# ---------------------------------------------------------------------------------------------
# The worker


def _count_nodes(world_size: int) -> int:
    """How many Ray nodes the ranks run on (a collective: all ranks call it)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if world_size <= 1 or not dist.is_initialized():
        return 1
    nodes: list = [None] * world_size
    dist.all_gather_object(nodes, node)
    return len(set(nodes))


def _per_rank(value: float, world_size: int) -> list[float]:
    """Every rank's `value` (a collective: all ranks call it)."""
    import torch.distributed as dist

    if world_size <= 1 or not dist.is_initialized():
        return [value]
    counts = torch.zeros(world_size, dtype=torch.float64)
    counts[dist.get_rank()] = value
    dist.all_reduce(counts)
    return counts.tolist()


def _strategy(job: TrainingJob, world_size: int, use_gpu: bool) -> str:
    """A name for the optimizer-state layout: checkpoints resume their optimizer only within one."""
    if job.train.fused:
        kind = f"dmp{world_size}" if world_size > 1 else "fused"
    else:
        kind = "ddp" if world_size > 1 else "plain"
    return f"{'gpu' if use_gpu else 'cpu'}-{kind}"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from `get_checkpoint()` if any, train, report every epoch.

    config: job (TrainingJob), encoders_json (str), use_gpu (bool), cpus_per_worker (float).
    """
    import ray.train

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    job: TrainingJob = config["job"]
    encoders = Encoders.from_json(config["encoders_json"])
    use_gpu = bool(config.get("use_gpu", False))

    device = torch.device("cpu")
    if use_gpu:
        import ray.train.torch

        device, job = ray.train.torch.get_device(), for_gpu(job)
    # fused: DMP shards the tables (one model, collectives in every step); else DDP replicas
    wrap_model = plain_keys_ddp if world_size > 1 and not job.train.fused else None
    every_rank_saves = world_size > 1 and job.train.fused
    strategy = _strategy(job, world_size, use_gpu)

    # -- resume ---------------------------------------------------------------------------------
    restored = ray.train.get_checkpoint()
    local_dir = Path(tempfile.mkdtemp(prefix=f"ray_ckpt_r{rank}_"))
    restored_dir: Path | None = None
    resumed_from_epoch: int | None = None
    same_layout = True
    if restored is not None:
        restored_dir = local_dir / "restored"
        restored.to_directory(str(restored_dir))
        info = read_info(restored_dir)
        resumed_from_epoch = info.epoch
        # e.g. a 1-worker fused run resumed with 2 sharded workers: the optimizer state has
        # another structure, so resume the weights, the epoch and the history with a fresh one
        same_layout = info.meta.get("strategy") == strategy
    meta = {"strategy": strategy, "resumed_from_epoch": resumed_from_epoch,
            "world_size": world_size, "job_epochs": job.train.epochs}
    if not same_layout:
        meta["optimizer_state"] = (f"reset: the checkpoint of epoch {resumed_from_epoch} was "
                                   f"written as {info.meta.get('strategy')!r}, this run is {strategy!r}")
        if rank == 0:
            logger.warning("resuming weights only, optimizer %s", meta["optimizer_state"])
    reported = 0

    def report(metrics: dict[str, float], write_checkpoint: Callable[[Path], Any],
               every_rank: bool = False) -> None:
        nonlocal reported
        reported += 1
        if rank != 0 and not every_rank:
            ray.train.report(metrics, checkpoint=None)
            return
        out_dir = Path(tempfile.mkdtemp(prefix="report_", dir=local_dir))
        write_checkpoint(out_dir)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(out_dir)))
        shutil.rmtree(out_dir, ignore_errors=True)  # SYNC upload mode: already persisted

    def on_epoch_end(end: EpochEnd) -> None:
        finish_epoch = getattr(end.model, "finish_epoch", None)
        if finish_epoch is not None:
            finish_epoch()  # DDP: every rank joins before the collectives below
        metrics = end.metrics
        metrics.update(finite_or_nan(metrics))
        per_rank = _per_rank(metrics.get("samples", 0.0), world_size)
        metrics.update({f"samples_rank{r}": s for r, s in enumerate(per_rank)})
        # the worker process's peak resident memory so far (Linux: ru_maxrss in KiB)
        rss = _per_rank(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, world_size)
        metrics.update({f"peak_rss_mb_rank{r}": m for r, m in enumerate(rss)})
        metrics["samples_total"] = float(sum(per_rank))
        metrics["world_size"] = float(world_size)
        metrics["nodes"] = float(_count_nodes(world_size))  # > 1 on a cluster (RAY_ADDRESS)
        # sharded: every rank writes its shards (a collective), Ray merges the uploads
        report(dict(metrics), lambda out_dir: end.save(out_dir, **meta), every_rank_saves)

    try:
        result = run_training(
            job, encoders, rank=rank, world_size=world_size, resume_from=restored_dir,
            resume_optimizer=same_layout, on_epoch_end=on_epoch_end, wrap_model=wrap_model,
            device=device,
        )
        if reported == 0 and restored_dir is not None:
            # Nothing left to train (a rerun of a finished run): report the restored checkpoint
            # again, so this run's result names a checkpoint it reported.
            last = result.history[-1] if result.history else {"epoch": float(resumed_from_epoch)}
            report(finite_or_nan(last), lambda out_dir: copy_checkpoint(
                restored_dir, out_dir, resumed_from_epoch=resumed_from_epoch))
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The driver


def _root_cause(exc: BaseException) -> str:
    """`Type: message` of the innermost cause, without Ray's wrapping and tracebacks."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        # RayTaskError keeps it in `cause`; Train V2's WorkerHealthCheckFailedError (a worker
        # process that died, e.g. SIGKILL) in `health_check_failure`: an ActorDiedError. Its
        # own text is mostly the worker's repr (node id, log path), which pushed the actual
        # reason past the 600-character cut.
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = getattr(exc, "health_check_failure", None)
        if isinstance(inner, BaseException) and inner is not exc:
            exc = inner
            continue
        if exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        break
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback" in text:
        text = lines[-1]  # the formatted traceback of a remote error ends in its message
    else:
        text = " ".join(lines)
    # ActorDiedError appends guesses ("Some common causes include: (1) ... the OOM killer ...")
    # whatever killed the process: keep the facts, or a classifier reads "OOM" into them
    text = text.split(" Some common causes include:", 1)[0]
    if len(text) > 600:
        text = text[:600] + " ..."
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _training_error(exc: BaseException, run_name: str) -> RayTrainingError:
    errors: dict[int, str] = {}
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict):
        errors = {int(r): _root_cause(e) for r, e in sorted(failures.items())}
    controller = getattr(exc, "controller_failure", None)
    if isinstance(controller, BaseException):
        errors[-1] = _root_cause(controller)
    if not errors:
        errors[-1] = _root_cause(exc)
    detail = "; ".join(
        (f"rank {r}: {msg}" if r >= 0 else f"controller: {msg}") for r, msg in errors.items()
    )
    return RayTrainingError(f"Ray training run {run_name!r} failed: {detail}", errors)


def _checkpoint_uri(checkpoint: Any, storage_path: str) -> str:
    path = str(checkpoint.path)
    if "://" in storage_path and "://" not in path:
        return f"{storage_path.split('://', 1)[0]}://{path}"
    return path


def train_on_ray(
    job: TrainingJob,
    encoders: Encoders,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    storage_path: str,
    run_name: str,
    max_failures: int = 1,
    cpus_per_worker: float = 1.0,
) -> TrainingResult:
    """Train `job` with `num_workers` Ray Train workers; returns the final weights and history.

    storage_path: where Ray Train persists checkpoints (absolute local path, or a URI such as
    s3://bucket/prefix); the run lives under `<storage_path>/<run_name>/`. Running again with
    the same storage_path and run_name resumes from that run's last checkpoint.
    max_failures: worker-group restarts Ray may make within this call (each resumes from the
    last checkpoint). Raises RayTrainingError with the workers' root-cause messages when
    training fails.
    use_gpu: one GPU per worker (see the module docstring); DeviceUnavailableError before Ray
    starts when this machine has no CUDA device (and no cluster is named: RAY_ADDRESS).
    Killing a worker mid-run is tested from outside in tests/faults/test_ray_worker_kill.py.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    if not run_name or "/" in run_name:
        raise ValueError(f"run_name must be a non-empty name without '/', got {run_name!r}")
    if "://" not in storage_path:
        if not os.path.isabs(storage_path):
            raise ValueError(f"a local storage_path must be absolute, got {storage_path!r}")
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    if use_gpu and not os.environ.get("RAY_ADDRESS"):
        # this machine's Ray (running or not): its devices, checked before Ray does anything;
        # a cluster's GPUs (RAY_ADDRESS) are counted below
        require_cuda(job)

    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    init_ray()
    gpus = ray.cluster_resources().get("GPU", 0) if use_gpu else 0
    if use_gpu and gpus < num_workers:  # else Ray waits for GPUs that never come
        raise DeviceUnavailableError(f"use_gpu=True with {num_workers} worker(s): the Ray cluster "
                                     f"has {gpus:g} GPU(s)")
    env_vars = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": str(max(1, int(cpus_per_worker))),
        **allocator_env(),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": job,
            "encoders_json": encoders.to_json(),
            "use_gpu": use_gpu,
            "cpus_per_worker": cpus_per_worker,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": env_vars},
        ),
    )
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise _training_error(exc, run_name) from exc
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RayTrainingError(f"Ray training run {run_name!r} reported no checkpoint")

    with result.checkpoint.as_directory() as directory:
        # the optimizer state may hold ShardedTensors (fused path), which unpickle only inside a
        # process group: the driver reads the plain weights and the history only
        state_dict = read_weights(directory)
        info = read_info(directory)
    resumed = info.meta.get("resumed_from_epoch")
    return TrainingResult(
        state_dict=state_dict,
        model_config=model_config(job, encoders),
        history=info.history,
        resumed_from_epoch=None if resumed is None else int(resumed),
        checkpoint_path=_checkpoint_uri(result.checkpoint, storage_path),
        num_workers=num_workers,
        seconds=seconds,
    )


__all__ = [
    "RayTrainingError", "init_ray", "train_on_ray", "train_loop_per_worker",
]
