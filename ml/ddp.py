"""DistributedDataParallel for ranks that read different amounts of data (Ray Train on the CPU).

`ml.ray_training` passes `plain_keys_ddp` to `ml.training_job.run_training(wrap_model=...)` when
several CPU workers train one model (see its module docstring for why DDP and not the sharded
fused path). The epoch hook calls the wrapper's `finish_epoch()` before its collectives.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def plain_keys_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel for `run_training(wrap_model=...)`, for ranks with uneven batches.

    * load_state_dict takes the unwrapped model's keys: `run_training` wraps the model before
      it loads a checkpoint, and checkpoints hold plain keys (`plain_state_dict` strips
      `module.`).
    * uneven inputs: each rank reads its own days, so the ranks take different numbers of steps
      per epoch; plain DDP then pairs one rank's gradient all-reduce with another's next
      collective and gloo aborts. The training forwards of an epoch run inside DDP's `Join`
      context (entered at the first training forward, left at the first forward that is not
      training, e.g. rank 0's validation, or by `finish_epoch()` from the epoch hook): a rank
      that runs out of batches shadows the others' all-reduces with zero gradients, and on
      leaving, every rank takes the weights of the rank that ran longest.
    * buffers are not broadcast in forward (rank 0 validates alone).
    """
    from torch.distributed.algorithms.join import _JoinConfig
    from torch.nn.parallel import DistributedDataParallel

    class _DDP(DistributedDataParallel):
        _epoch_join: Any = None  # the Join entered at this epoch's first training forward
        _joined = False  # this rank has left this epoch's Join (validation ran after it)

        def load_state_dict(  # type: ignore[override]
            self, state_dict: Any, strict: bool = True, assign: bool = False
        ) -> Any:
            return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

        def forward(self, *inputs: Any, **kwargs: Any) -> Any:
            if self.training and torch.is_grad_enabled():
                if self._joined:
                    raise RuntimeError(
                        "training forward after this epoch's join: call finish_epoch() first"
                    )
                if self._epoch_join is None:
                    self._enter_join()
            elif self._epoch_join is not None:
                self._leave_join()
            return super().forward(*inputs, **kwargs)

        def finish_epoch(self) -> None:
            """End of an epoch on this rank: join (once) and wait until every rank has joined."""
            if not self._joined:
                if self._epoch_join is None:  # no training batch on this rank this epoch
                    self._enter_join()
                self._leave_join()
            self._joined = False

        def _enter_join(self) -> None:
            self._epoch_join = self.join()
            self._epoch_join.__enter__()

        def _leave_join(self) -> None:
            join, self._epoch_join = self._epoch_join, None
            join.__exit__(None, None, None)  # shadows the others' all-reduces until all joined
            self._joined = True
            # later forwards (validation) must not announce themselves to a finished Join
            self._join_config = _JoinConfig.construct_disabled_join_config()

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return _DDP(model, forward_sync_buffers=False)  # torch >= 2.13 name; init still syncs
    return _DDP(model, broadcast_buffers=False)


__all__ = ["plain_keys_ddp"]
