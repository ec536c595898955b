"""The moving average of the weights (train.ema): its arithmetic, the swap, what is saved."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seq2seq.ema import WeightAverage


def linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 2, bias=False)
    nn.init.constant_(layer.weight, value)
    return layer


def test_the_average_follows_the_weights_with_the_early_decay_then_the_set_one():
    model = linear(0.0)
    average = WeightAverage(model, decay=0.9)
    expected = 0.0
    for update in range(1, 30):
        with torch.no_grad():
            model.weight.fill_(float(update))
        average.update()
        decay = min(0.9, (1 + update) / (10 + update))
        expected = decay * expected + (1 - decay) * update
        assert average.average[0][0, 0].item() == pytest.approx(expected)


def test_swapped_in_gives_the_model_the_average_and_then_its_own_weights_back():
    model = linear(1.0)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update()  # decay min(0.5, 2/11): 1 + (3 - 1) * 9/11
    with average.swapped_in():
        assert model.weight[0, 0].item() == pytest.approx(1 + 2 * 9 / 11)
    assert model.weight[0, 0].item() == 3.0


def test_a_resume_puts_the_trained_weights_back_and_the_checkpoints_in_the_average():
    model = linear(1.0)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update()
    state = average.state_dict()
    with average.swapped_in():
        checkpoint = {k: v.clone() for k, v in model.state_dict().items()}

    resumed_model = linear(0.0)
    resumed = WeightAverage(resumed_model, decay=0.5)
    resumed_model.load_state_dict(checkpoint)  # what training loads from a checkpoint
    resumed.load_state_dict(state)
    assert torch.equal(resumed_model.weight, model.weight)
    assert torch.equal(resumed.average[0], average.average[0]) and resumed.updates == 1
