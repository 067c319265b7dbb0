"""The minibatch loop both PyTorch models train with: shuffled batches of row positions, one optimiser step each,
the network in eval mode after every epoch so that `after_epoch` (Optuna's pruning) measures what would ship."""

from __future__ import annotations

from typing import Callable

import torch


def train_epochs(network: torch.nn.Module, optimiser: torch.optim.Optimizer, rows: int, batch: int, epochs: int,
                 seed: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
                 after_epoch: Callable[[int], None] | None = None) -> None:
    """`batch_loss(positions)` is the loss of one batch of row positions; `after_epoch(epoch)` may raise to stop."""
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        network.train()
        for positions in torch.randperm(rows, generator=generator).split(batch):
            loss = batch_loss(positions)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        network.eval()
        if after_epoch is not None:
            after_epoch(epoch)
