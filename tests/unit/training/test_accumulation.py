"""Micro-batches (gradient accumulation) give the large batch's step, and the plain path is the
old one bit for bit; the training step under bf16 autocast (the GPU path, exercised on the CPU).

Tolerances: micro-batches only reorder float32 sums (rtol 1e-5 on gradients here; the same on
a GPU, where cuBLAS may pick other kernels per shape); bf16 autocast keeps ~3 significant
digits in the forward pass, so a step's loss agrees to ~1e-2 relative (the bound a GPU run
would use too: bf16's rounding is the same on both).
"""

from __future__ import annotations

import pytest
import torch
from unlearnbench.compute import precision_policy
from unlearnbench.lm_data import collate, mean_loss
from unlearnbench.models import ModelConfig, build_model, fingerprint
from unlearnbench.seeding import torch_generator
from unlearnbench.training.loop import (
    TrainConfig,
    accumulate_gradient,
    lr_at,
    make_optimizer,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, EOS = 50, 0
RECIPE = dict(epochs=2, batch_size=6, lr=3e-3, seed=1, warmup_steps=2)


def tiny_model():
    cfg = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)
    return build_model(cfg, vocab_size=VOCAB, eos_id=EOS, seed=0)


def data(n=20):
    """Sequences of uneven length, so micro-batches pad differently from the whole batch."""
    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(2, 14, (n,), generator=gen).tolist()
    return [[EOS, *torch.randint(1, VOCAB, (k,), generator=gen).tolist(), EOS] for k in lengths]


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_micro_batches_give_the_whole_batch_gradient(micro):
    rows = data(7)
    whole, parts = tiny_model(), tiny_model()
    loss = mean_loss(whole, collate(rows, EOS))
    loss.backward()
    part_loss, tokens = accumulate_gradient(parts, rows, EOS, micro)
    assert tokens == int(collate(rows, EOS).attention_mask.sum())
    torch.testing.assert_close(part_loss, loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads(parts), grads(whole), rtol=1e-5, atol=1e-7)


def reference_train(model, sequences, cfg):
    """The loop as it was before micro-batches: one forward and backward per step."""
    model.train()
    optimizer = make_optimizer(model, cfg)
    per_epoch = -(-len(sequences) // cfg.batch_size)
    total = per_epoch * cfg.epochs
    for step in range(total):
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(
            len(sequences), generator=torch_generator(cfg.seed, "data_order", epoch)
        )
        rows = order[index * cfg.batch_size : (index + 1) * cfg.batch_size].tolist()
        batch = collate([sequences[i] for i in rows], EOS)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        loss = mean_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
    model.eval()


def test_without_micro_batches_training_is_the_old_loop_bit_for_bit():
    model, reference = tiny_model(), tiny_model()
    train(model, data(), TrainConfig(**RECIPE), pad_id=EOS)
    reference_train(reference, data(), TrainConfig(**RECIPE))
    assert fingerprint(model) == fingerprint(reference)


def test_training_in_micro_batches_equals_the_large_batch():
    """Two optimizer steps (clipping and AdamW included) agree to float32 rounding. Longer runs
    drift apart: Adam divides each coordinate by its own gradient scale, so rounding noise in
    gradients near zero grows step by step (measured here: 1e-7 after one step, 1e-6 after
    two, 1e-3 after four), as it would between two GPUs' kernels."""
    recipe = {**RECIPE, "epochs": 1}
    whole, parts = tiny_model(), tiny_model()
    history = train(whole, data(12), TrainConfig(**recipe), pad_id=EOS)
    accumulated = train(parts, data(12), TrainConfig(**recipe, micro_batch_size=2), pad_id=EOS)
    assert accumulated["steps"] == history["steps"] == 2
    assert accumulated["tokens"] == history["tokens"]
    assert accumulated["epoch_loss"] == pytest.approx(history["epoch_loss"], rel=1e-6)
    for a, b in zip(parts.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_bad_micro_batch_size_names_its_key():
    with pytest.raises(ValueError, match=r"train\.micro_batch_size: must be >= 1"):
        TrainConfig(**RECIPE, micro_batch_size=0)


def test_the_bf16_autocast_step_runs_and_keeps_float32_weights():
    """The GPU path on the CPU (the frame never autocasts on the CPU; the test allows it)."""
    plain, mixed = tiny_model(), tiny_model()
    rows = data(6)
    loss, _ = accumulate_gradient(plain, rows, EOS, None)
    with precision_policy("bfloat16", allow_cpu=True):
        mixed_loss, _ = accumulate_gradient(mixed, rows, EOS, 2)
    assert mixed_loss != loss  # the forward pass did run in bf16
    assert float(mixed_loss) == pytest.approx(float(loss), rel=1e-2)
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in mixed.parameters()
    )
    cosine = torch.nn.functional.cosine_similarity(grads(mixed), grads(plain), dim=0)
    assert cosine > 0.99
