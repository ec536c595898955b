"""An exponential moving average of the weights (`train.ema`), as Marian's exponential
smoothing: after every optimizer step, average <- average + (1 - decay) * (weights - average).

Validations score the averaged weights and checkpoints hold them (they are what a user
translates with); the weights that training goes on from are kept in the train state, so a
resumed run continues exactly. Early on the decay is min(decay, (1 + n) / (10 + n)) after n
updates, so the average does not hold on to the random initial weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]  # tied: once
        self.average = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the weights after one optimizer step."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1 - decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own weights after it."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def swap(self) -> None:
        for index, parameter in enumerate(self.parameters):
            parameter.data, self.average[index] = self.average[index], parameter.data

    def state_dict(self) -> dict:
        """The update count and the model's own (not averaged) weights, outside `swapped_in`."""
        return {"updates": self.updates, "trained": [p.detach().clone() for p in self.parameters]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Resume: the model holds a checkpoint's (averaged) weights; the trained ones return."""
        self.updates = int(state["updates"])
        for parameter, average, trained in zip(
            self.parameters, self.average, state["trained"], strict=True
        ):
            average.copy_(parameter)
            parameter.copy_(trained)
