"""Label-smoothed cross-entropy: the closed form, and padding that contributes nothing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seq2seq.loss import label_smoothed_cross_entropy, projected_cross_entropy

PAD = 0


def test_matches_the_closed_form_on_a_small_example():
    # One token, vocabulary of 4, logits chosen so the probabilities are exact: p = (1, 1, 2, 4)/8.
    logits = torch.log(torch.tensor([[1.0, 1.0, 2.0, 4.0]]))
    target = torch.tensor([2])
    eps = 0.1
    p = [1 / 8, 1 / 8, 2 / 8, 4 / 8]
    nll = -math.log(p[2])
    # q = (1 - eps) one_hot(2) + eps / 4 on every class
    expected = -sum(((1 - eps) * (v == 2) + eps / 4) * math.log(p[v]) for v in range(4))
    out = label_smoothed_cross_entropy(logits, target, smoothing=eps, pad_id=PAD)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.nll.item() == pytest.approx(nll, rel=1e-6)
    assert out.tokens.item() == 1


def test_without_smoothing_loss_is_the_nll():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    target = torch.randint(1, 7, (2, 5), generator=generator)
    out = label_smoothed_cross_entropy(logits, target, smoothing=0.0, pad_id=PAD)
    torch.testing.assert_close(out.loss, out.nll)
    expected = F.cross_entropy(logits.view(-1, 7), target.view(-1), reduction="sum")
    torch.testing.assert_close(out.nll, expected)


def test_agrees_with_torch_label_smoothing_and_ignore_index():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 11, generator=generator)
    target = torch.randint(1, 11, (3, 6), generator=generator)
    target[0, 4:] = PAD
    target[2, 1:] = PAD
    out = label_smoothed_cross_entropy(logits, target, smoothing=0.2, pad_id=PAD)
    expected = F.cross_entropy(
        logits.view(-1, 11), target.view(-1), label_smoothing=0.2, ignore_index=PAD, reduction="sum"
    )
    torch.testing.assert_close(out.loss, expected)
    assert out.tokens.item() == int((target != PAD).sum())


def test_padding_contributes_nothing_whatever_its_logits():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 4, 9, generator=generator)
    target = torch.tensor([[5, 6, 7, 3]])
    reference = label_smoothed_cross_entropy(logits, target, smoothing=0.1, pad_id=PAD)
    padded_logits = torch.cat([logits, 1e4 * torch.randn(1, 3, 9, generator=generator)], dim=1)
    padded_target = torch.cat([target, torch.full((1, 3), PAD)], dim=1)
    padded = label_smoothed_cross_entropy(padded_logits, padded_target, smoothing=0.1, pad_id=PAD)
    for a, b in zip(reference, padded, strict=True):
        torch.testing.assert_close(a, b)


def test_padding_positions_get_no_gradient():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    target = torch.tensor([[4, PAD, PAD]])
    label_smoothed_cross_entropy(logits, target, smoothing=0.1, pad_id=PAD).loss.backward()
    assert logits.grad[0, 1:].abs().sum() == 0
    assert logits.grad[0, 0].abs().sum() > 0


def test_gradient_passes_gradcheck():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    target = torch.tensor([1, 2, PAD, 4, 6])

    def loss_of(x):
        return label_smoothed_cross_entropy(x, target, smoothing=0.2, pad_id=PAD).loss

    assert torch.autograd.gradcheck(loss_of, (logits,))


def test_gradient_matches_torch_cross_entropy():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 13, generator=generator)
    target = torch.randint(1, 13, (2, 6), generator=generator)
    target[1, 3:] = PAD
    ours = logits.clone().requires_grad_()
    theirs = logits.clone().requires_grad_()
    label_smoothed_cross_entropy(ours, target, smoothing=0.1, pad_id=PAD).loss.backward()
    F.cross_entropy(
        theirs.view(-1, 13), target.view(-1), label_smoothing=0.1, ignore_index=PAD, reduction="sum"
    ).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_bfloat16_logits_are_scored_in_float32():
    logits = torch.randn(3, 10).to(torch.bfloat16).requires_grad_()
    target = torch.tensor([4, 5, 6])
    out = label_smoothed_cross_entropy(logits, target, smoothing=0.1, pad_id=PAD)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def projected_case(seed: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 9, 8, dtype=dtype, generator=generator, requires_grad=True)
    weight = torch.randn(23, 8, dtype=dtype, generator=generator, requires_grad=True)
    target = torch.randint(1, 23, (3, 9), generator=generator)
    target[1, 5:] = PAD
    target[2, 2:] = PAD
    return hidden, weight, target


@pytest.mark.parametrize("chunk", [1, 4, 7, 256])
def test_projected_loss_equals_the_loss_of_materialised_logits(chunk):
    hidden, weight, target = projected_case(5)
    fused = projected_cross_entropy(hidden, weight, target, 0.1, PAD, chunk=chunk)
    plain = label_smoothed_cross_entropy(hidden @ weight.t(), target, 0.1, PAD)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(fused.loss, (hidden, weight))
    expected = torch.autograd.grad(plain.loss, (hidden, weight))
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_projected_loss_passes_gradcheck_and_ignores_padding_rows():
    hidden, weight, target = projected_case(6)
    assert torch.autograd.gradcheck(
        lambda h, w: projected_cross_entropy(h, w, target, 0.2, PAD, chunk=5).loss, (hidden, weight)
    )
    (grad,) = torch.autograd.grad(
        projected_cross_entropy(hidden, weight, target, 0.1, PAD).loss, hidden
    )
    assert grad[target == PAD].abs().sum() == 0


def test_projected_loss_under_bfloat16_autocast_stays_close_to_float32():
    hidden, weight, target = projected_case(7, dtype=torch.float32)
    exact = projected_cross_entropy(hidden, weight, target, 0.1, PAD)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = projected_cross_entropy(hidden, weight, target, 0.1, PAD)
    assert fast.loss.dtype == torch.float32
    torch.testing.assert_close(fast.loss, exact.loss, rtol=1e-2, atol=0)
    fast_grad = torch.autograd.grad(fast.loss, weight)[0]
    assert fast_grad.dtype == torch.float32
    exact_grad = torch.autograd.grad(exact.loss, weight)[0]
    torch.testing.assert_close(fast_grad, exact_grad, rtol=0, atol=5e-2 * exact_grad.abs().max())
