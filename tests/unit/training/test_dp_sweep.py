"""DP-SGD's trainable subsets, runs stopped and continued, and the rate sweep that chooses on the
validation split inside the privacy budget."""

from __future__ import annotations

import json

import pytest
import torch
from test_dp import EOS, RECIPE, VOCAB, data, tiny_model  # the DP tests' tiny model and data
from transformers import OPTConfig, OPTForCausalLM
from unlearnbench.models import fingerprint
from unlearnbench.training.dp import DPConfig, accounted_steps, noise_multiplier, train_dp
from unlearnbench.training.dp_sweep import DPSweep, dp_settings, prefix_steps, sweep_dp
from unlearnbench.training.param_subset import freeze_all_but, trainable_parameters

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def two_layer_gpt2():
    from unlearnbench.models import ModelConfig, build_model

    cfg = ModelConfig(n_layer=2, n_embd=16, n_head=2, n_positions=32)
    return build_model(cfg, vocab_size=VOCAB, eos_id=EOS, seed=0)


def tiny_opt():
    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, ffn_dim=32,
        num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16,
    )  # fmt: skip
    return OPTForCausalLM(cfg)


def names(model, subset):
    chosen = {id(p) for p in trainable_parameters(model, subset)}
    return {name for name, p in model.named_parameters() if id(p) in chosen}


def test_subsets_by_module_type_in_gpt2_and_opt():
    gpt2 = two_layer_gpt2()
    assert names(gpt2, "all") == {name for name, _ in gpt2.named_parameters()}
    norms = names(gpt2, "norms_biases")
    assert norms and all(".ln_" in n or n.endswith(".bias") for n in norms)
    assert "transformer.ln_f.weight" in norms and "transformer.h.0.attn.c_attn.bias" in norms
    assert not any(n.endswith("c_attn.weight") or "wte" in n for n in norms)
    last = names(gpt2, "last_block")
    assert last == {n for n, _ in gpt2.named_parameters() if ".h.1." in n or "ln_f" in n}
    opt = tiny_opt()
    last = names(opt, "last_block")
    assert last == {
        n
        for n, _ in opt.named_parameters()
        if ".layers.1." in n or n.startswith("model.decoder.final_layer_norm.")
    }
    norms = names(opt, "norms_biases")
    assert "model.decoder.layers.0.self_attn.q_proj.bias" in norms
    assert not any(n.endswith("q_proj.weight") for n in norms)
    with pytest.raises(ValueError, match=r"train_dp\.trainable: must be one of"):
        trainable_parameters(gpt2, "lora")


@pytest.mark.parametrize("subset", ["norms_biases", "last_block"])
def test_dp_on_a_subset_moves_only_the_subset(subset):
    model = two_layer_gpt2()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    chosen = names(two_layer_gpt2(), subset)
    result = train_dp(model, data(), DPConfig(**RECIPE, trainable=subset), pad_id=EOS)
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (name in chosen), name
        assert p.requires_grad  # a plain model comes back
    assert result["trained_parameters"] == sum(
        p.numel() for n, p in model.named_parameters() if n in chosen
    )
    assert 0 < freeze_all_but(two_layer_gpt2(), subset) < sum(p.numel() for p in model.parameters())


def test_stopped_run_continues_bitwise(tmp_path):
    whole = tiny_model()
    train_dp(whole, data(), DPConfig(**RECIPE), pad_id=EOS)
    part = tiny_model()
    first = train_dp(part, data(), DPConfig(**RECIPE), EOS, tmp_path, until=5)
    assert first["steps_done"] == 5 and tmp_path.exists()  # kept to continue from
    again = tiny_model()  # a call past `until` trains nothing more
    assert train_dp(again, data(), DPConfig(**RECIPE), EOS, tmp_path, until=3)["steps_done"] == 5
    assert fingerprint(again) == fingerprint(part)
    rest = tiny_model()
    done = train_dp(rest, data(), DPConfig(**RECIPE), EOS, tmp_path)
    assert done["steps_done"] == 12 and fingerprint(rest) == fingerprint(whole)
    assert not tmp_path.exists()
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        train_dp(tiny_model(), data(), DPConfig(**RECIPE), EOS, until=3)


def test_sweep_accounts_every_step_and_ends_as_the_full_run_of_the_best_rate(tmp_path):
    sequences, validation = data(), data(6, seed=9)
    cfg = DPConfig(**RECIPE)
    lrs = [1e-3, 3e-2]
    model, record = sweep_dp(
        tiny_model, sequences, validation, cfg, DPSweep(tuple(lrs)), EOS, tmp_path
    )
    prefix = prefix_steps(12, 0.25)
    assert prefix == 3 and record["sweep_prefix_steps"] == 3
    losses = {row["lr"]: row["validation_loss"] for row in record["sweep"]}
    best = min(losses, key=losses.get)
    assert record["lr"] == best and [r["chosen"] for r in record["sweep"]] == [
        lr == best for lr in lrs
    ]
    # The noise covers the losing prefix too: more noise than one run, epsilon still <= target.
    swept = DPConfig(**{**RECIPE, "lr": best, "extra_accounted_steps": prefix})
    assert accounted_steps(swept, 12) == 15 == record["accounted_steps"]
    assert record["noise_multiplier"] == noise_multiplier(swept, 12) > noise_multiplier(cfg, 12)
    assert record["epsilon"] <= 8.0 and record["epsilon"] > record["epsilon_this_run"]
    # The final model is the uninterrupted full run at the chosen rate, and nothing is left.
    full = tiny_model()
    train_dp(full, sequences, swept, pad_id=EOS)
    assert fingerprint(model) == fingerprint(full) and not tmp_path.exists()


def test_sweep_resumes_with_the_recorded_losses(tmp_path):
    """A restart re-chooses nothing: the losses already written decide, even when the
    candidates' checkpoints moved on (here: a record that makes the larger rate win)."""
    sequences, validation = data(), data(6, seed=9)
    cfg = DPConfig(**RECIPE)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "sweep.json").write_text(json.dumps({"lr~0.001": 9.0, "lr~0.03": 1.0}))
    model, record = sweep_dp(
        tiny_model, sequences, validation, cfg, DPSweep((1e-3, 3e-2)), EOS, tmp_path
    )
    assert record["lr"] == 3e-2
    full = tiny_model()
    train_dp(full, sequences, DPConfig(**{**RECIPE, "lr": 3e-2, "extra_accounted_steps": 3}), EOS)
    assert fingerprint(model) == fingerprint(full)


def test_one_rate_is_a_plain_run_and_bad_sweeps_are_refused(tmp_path):
    model, record = sweep_dp(
        tiny_model, data(), data(6, 9), DPConfig(**RECIPE), DPSweep((3e-3,)), EOS, tmp_path
    )
    plain = tiny_model()
    train_dp(plain, data(), DPConfig(**RECIPE), EOS)
    assert fingerprint(model) == fingerprint(plain) and record["sweep"] == []
    with pytest.raises(ValueError, match=r"train_dp\.lr: the rates must differ"):
        DPSweep((1e-3, 1e-3))
    with pytest.raises(ValueError, match=r"train_dp\.sweep_fraction: must be in"):
        DPSweep((1e-3,), 0.0)
    with pytest.raises(ValueError, match="non-empty validation split"):
        sweep_dp(tiny_model, data(), [], DPConfig(**RECIPE), DPSweep((1e-3, 2e-3)), EOS, tmp_path)


def test_settings_block_becomes_recipe_and_sweep():
    block = {k: v for k, v in RECIPE.items() if k not in ("target_epsilon", "seed")}
    recipe, sweep = dp_settings({**block, "lr": [1e-3, 2e-3], "sweep_fraction": 0.5}, None, 3)
    assert sweep == DPSweep((1e-3, 2e-3), 0.5) and recipe.lr == 1e-3 and recipe.seed == 3
    assert recipe.target_epsilon is None
    _, single = dp_settings({**block, "lr": 0.01, "sweep_fraction": 0.25}, 8.0, 0)
    assert single.lrs == (0.01,)
