"""The one shape that data code produces and model code consumes."""

from dataclasses import dataclass

import torch

# The heads trained jointly, in this order in `Batch.labels`.
HEADS = ("take", "complete", "music_like")


@dataclass
class Batch:
    """A mini-batch of examples.

    dense:  float32 [B, n_dense]   normalized dense features (statistics saved with the model)
    sparse: int64   [B, n_slots]   one id per categorical feature, already mapped into that
                                   feature's vocabulary; 0 is the out-of-vocabulary bucket; a
                                   multi-valued feature takes k columns (a bag: its values'
                                   ids, -1 in unused slots; `FeatureSpec.bags`)
    labels: float32 [B, len(HEADS)] 0/1 targets per head
    """

    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.dense.to(device), self.sparse.to(device), self.labels.to(device))
