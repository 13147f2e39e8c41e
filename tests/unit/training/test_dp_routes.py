"""Every DP-SGD route (train_dp.grad_sample_mode) on tiny GPT-2 and OPT models: per-sample
gradients against single-example backward passes, the clipped and noised step against a loop
over examples, the OPT and ghost-clipping fixes and refusals, and whole train_dp runs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_dp import EOS, VOCAB, data, tiny_model  # the DP tests' tiny GPT-2 and data
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM
from unlearnbench.lm_data import collate
from unlearnbench.models import fingerprint
from unlearnbench.training.dp import DPConfig, make_optimizer, train_dp
from unlearnbench.training.dp_layers import opacus_ready, shared_parameters
from unlearnbench.training.dp_routes import GRAD_SAMPLE_MODES, attach, per_sequence_loss

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore:In CPU autocast"),  # Opacus's functorch path, harmless
]

PER_SAMPLE_MODES = [m for m in GRAD_SAMPLE_MODES if m != "ghost"]  # ghost never forms them


def tiny_opt(tied: bool = True, layer_norm_before: bool = True, projected: bool = False):
    """OPT-125m's layout (LayerNorm before) or OPT-350m's (after, with the embedding projected
    from a narrower width); token 1 is OPT's padding_idx and occurs in the data."""
    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
        max_position_embeddings=32, word_embed_proj_dim=8 if projected else 16,
        do_layer_norm_before=layer_norm_before, tie_word_embeddings=tied,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    return OPTForCausalLM(cfg)


def untied_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


MODELS = {
    "gpt2": tiny_model,
    "opt": tiny_opt,
    "opt-350m-layout": lambda: tiny_opt(layer_norm_before=False, projected=True),
}


def sequences():
    rows = data(4)
    rows[2] = [EOS, 1, 5, 1, 7, EOS]  # OPT's padding_idx as a real token
    return rows


def on_device_of(model, rows):
    return collate(rows, EOS).to(next(model.parameters()).device)


def loop_gradients(model, rows):
    """The slow, obvious reference: one backward pass per example."""
    model = copy.deepcopy(model).train()
    grads = []
    for row in rows:
        model.zero_grad()
        per_sequence_loss(model, on_device_of(model, [row]))[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return grads


def recipe(mode, **changes):
    base = dict(epochs=1, batch_size=4, lr=1e-3, target_epsilon=None, seed=0)
    return DPConfig(**{**base, "grad_sample_mode": mode, **changes})


def per_sample_gradients(model, mode, rows):
    cfg = recipe(mode)
    route = attach(model.train(), make_optimizer(model, cfg), 8, cfg, noise=0.0)
    try:
        route.optimizer.zero_grad(set_to_none=True)
        route._gradients(on_device_of(model, rows))
        # The folded route keeps them divided by the batch size (its optimizer's sample_scale).
        scale = getattr(route.optimizer, "sample_scale", 1.0)
        return {n: p.grad_sample * scale for n, p in model.named_parameters()}
    finally:
        route.cleanup()


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("mode", PER_SAMPLE_MODES)
def test_per_sample_gradients_equal_single_example_backward_passes(arch, mode):
    rows = sequences()
    model = MODELS[arch]()
    expected = loop_gradients(model, rows)
    got = per_sample_gradients(model, mode, rows)
    assert set(got) == set(expected[0])  # every trained parameter, the tied one once
    for name, samples in got.items():
        assert samples.shape[0] == len(rows), name  # examples, not tokens (OPT's MLP)
        for i, reference in enumerate(expected):
            assert torch.allclose(samples[i], reference[name], atol=1e-6, rtol=1e-4), (name, i)
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # cleaned up


@pytest.mark.parametrize("arch", MODELS)
def test_lean_is_bitwise_opacus_hooks(arch):
    """Also with many repeated tokens per sequence (a vocabulary of 50, 28 tokens each): the
    tied embedding's rows are summed in Opacus's order."""
    gen = torch.Generator().manual_seed(1)
    rows = sequences() + [torch.randint(0, VOCAB, (28,), generator=gen).tolist() for _ in range(6)]
    lean = per_sample_gradients(MODELS[arch](), "lean", rows)
    hooks = per_sample_gradients(MODELS[arch](), "hooks", rows)
    assert all(torch.equal(lean[n], hooks[n]) for n in hooks)


def reference_step(model, rows, clip, noise_multiplier, seed, expected_batch):
    """Clip each example's gradient, sum, add seeded Gaussian noise per parameter (in the
    optimizer's order), average over the expected batch: the updated parameters after SGD
    with rate 1."""
    grads = loop_gradients(model, rows)
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for g in grads:
        norm = math.sqrt(sum(float(v.pow(2).sum()) for v in g.values()))
        for n in total:
            total[n] += g[n] * min(1.0, clip / (norm + 1e-6))
    gen = torch.Generator().manual_seed(seed)
    updated = {}
    for n, p in params.items():
        noise = torch.normal(0.0, noise_multiplier * clip, p.shape, generator=gen)
        updated[n] = p.detach() - (total[n] + noise) / expected_batch
    return updated


STEP_MODELS = {**MODELS, "gpt2-untied": untied_gpt2, "opt-untied": lambda: tiny_opt(tied=False)}
# Ghost clipping refuses the tied models (test_ghost_refuses_tied_embeddings...).
STEPS = [(arch, mode) for arch in STEP_MODELS for mode in PER_SAMPLE_MODES] + [
    ("gpt2-untied", "ghost"),
    ("opt-untied", "ghost"),
]


@pytest.mark.parametrize(("arch", "mode"), STEPS)
def test_clipped_noised_step_equals_a_loop_over_examples(arch, mode):
    model = STEP_MODELS[arch]()
    rows, clip, sigma = sequences(), 0.05, 0.7
    expected = reference_step(model, rows, clip, sigma, seed=11, expected_batch=2)
    cfg = recipe(mode, max_grad_norm=clip, batch_size=2)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    generator = torch.Generator()
    # N = 4 at expected batch 2: q = 1/2, Opacus averages over int(N q) = 2.
    route = attach(model.train(), sgd, 4, cfg, sigma, generator)
    generator.manual_seed(11)
    route.step(collate(rows, EOS))
    route.cleanup()
    for name, p in model.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-6, rtol=1e-4), name
    assert route.accountant.history == [(sigma, 0.5, 1)]


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_empty_batch_steps_with_noise_alone(mode):
    model = untied_gpt2()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = recipe(mode, batch_size=2)
    generator = torch.Generator().manual_seed(3)
    route = attach(
        model.train(), torch.optim.SGD(model.parameters(), lr=1.0), 4, cfg, 0.5, generator
    )
    route.step(None)
    route.cleanup()
    gen = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        noise = torch.normal(0.0, 0.5, p.shape, generator=gen)
        assert torch.allclose(p, before[name] - noise / 2, atol=1e-7), name
    assert route.accountant.history == [(0.5, 0.5, 1)]


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_ghost_refuses_tied_embeddings_before_touching_the_model(arch):
    model = MODELS[arch]()
    before = fingerprint(model)
    cfg = recipe("ghost")
    with pytest.raises(ValueError, match=r"train_dp\.grad_sample_mode: 'ghost' clipping .*ties"):
        attach(model, make_optimizer(model, cfg), 8, cfg, 1.0)
    with pytest.raises(ValueError, match=r"train_dp\.trainable: norms_biases or last_block"):
        train_dp(model, data(), DPConfig(**{**vars(cfg), "target_epsilon": 8.0}), pad_id=EOS)
    assert fingerprint(model) == before and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("projected", [False, True])
def test_opacus_ready_keeps_opt_outputs_and_names_and_restores(projected):
    model = tiny_opt(layer_norm_before=not projected, projected=projected).train()
    batch = collate(sequences(), EOS)
    plain = model(**batch.model_inputs()).logits
    names = [n for n, _ in model.named_parameters()]
    with opacus_ready(model):
        kinds = {type(m).__name__ for m in model.modules()}
        assert {"BatchFirstOPTDecoderLayer", "PositionIndexEmbedding"} <= kinds
        assert torch.equal(model(**batch.model_inputs()).logits, plain)
        assert [n for n, _ in model.named_parameters()] == names
    kinds = {type(m).__name__ for m in model.modules()}
    assert "OPTDecoderLayer" in kinds and "BatchFirstOPTDecoderLayer" not in kinds
    assert not model.model.decoder.embed_positions._forward_pre_hooks


def test_shared_parameters_finds_the_tied_embeddings_only_while_trained():
    assert shared_parameters(tiny_model()) == {
        "transformer.wte.weight": ["transformer.wte", "lm_head"]
    }
    assert shared_parameters(untied_gpt2()) == {}
    opt = tiny_opt()
    opt.model.decoder.embed_tokens.weight.requires_grad_(False)
    assert shared_parameters(opt) == {}


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_train_dp_end_to_end_on_every_route(arch, mode):
    """A whole DP-SGD run (Poisson batches, empty ones included, calibrated noise, accountant)
    on each route; ghost trains the last block (its embeddings, tied, stay frozen)."""
    model = MODELS[arch]()
    before = fingerprint(model)
    trainable = "last_block" if mode == "ghost" else "all"
    cfg = DPConfig(
        epochs=2, batch_size=2, lr=3e-3, target_epsilon=8.0, seed=6, grad_sample_mode=mode,
        trainable=trainable,
    )  # fmt: skip
    result = train_dp(model, data(), cfg, pad_id=EOS)
    assert fingerprint(model) != before and result["grad_sample_mode"] == mode
    assert 8.0 - 0.05 <= result["epsilon"] <= 8.0 and result["steps_done"] == 12
    assert result["empty_batches"] == 2 and all(math.isfinite(x) for x in result["epoch_loss"])
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert {type(m).__name__ for m in model.modules()}.isdisjoint(
        {"BatchFirstOPTDecoderLayer", "PositionIndexEmbedding"}
    )


def test_routes_agree_on_a_whole_run():
    """The same run by each per-sample route: lean is bitwise hooks; the others (folded
    included: its output layer sees real positions only) equal it to float rounding."""
    models = {}
    for mode in PER_SAMPLE_MODES:
        model = tiny_opt()
        cfg = DPConfig(
            epochs=1, batch_size=3, lr=3e-3, target_epsilon=8.0, seed=2, grad_sample_mode=mode
        )
        train_dp(model, data(), cfg, pad_id=EOS)
        models[mode] = model
    assert fingerprint(models["lean"]) == fingerprint(models["hooks"])
    hooks = dict(models["hooks"].named_parameters())
    for mode in ("folded", "functorch", "vmap"):
        for name, p in models[mode].named_parameters():
            assert torch.allclose(p, hooks[name], atol=1e-5), (mode, name)
