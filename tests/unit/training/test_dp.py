"""DP-SGD: the privacy accounting against an independent accountant, determinism and
bitwise-equal resumption (the routes' per-sample gradients and clipping: test_dp_routes.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from unlearnbench.models import ModelConfig, build_model, fingerprint
from unlearnbench.training import dp_accounting as dp_module
from unlearnbench.training.dp import DPConfig, noise_multiplier, poisson_rows, train_dp
from unlearnbench.training.dp_accounting import resolve_delta

VOCAB, EOS = 50, 0


def tiny_model(seed=0):
    cfg = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)
    return build_model(cfg, vocab_size=VOCAB, eos_id=EOS, seed=seed)


def data(n=12, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return [
        [
            EOS,
            *torch.randint(
                1, VOCAB, (int(torch.randint(3, 12, (1,), generator=gen)),), generator=gen
            ).tolist(),
            EOS,
        ]
        for _ in range(n)
    ]


# N = 12, expected batch 2: q = 1/6, 6 steps per epoch, 12 steps; P(empty batch) = 11 %, and
# seed 6 draws empty batches at steps 1 and 6 (the first of epoch 2). The default (PRV)
# accountant is calibrated once for all tests (the calibration is cached per setting).
RECIPE = dict(epochs=2, batch_size=2, lr=3e-3, target_epsilon=8.0, seed=6, checkpoint_every=2)


@pytest.fixture(scope="module")
def reference():
    model = tiny_model()
    history = train_dp(model, data(), DPConfig(**RECIPE), pad_id=EOS)
    return fingerprint(model), history


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_epsilon_matches_independent_accountant_and_target(reference):
    _, history = reference
    n, cfg = 12, DPConfig(**RECIPE)
    assert history["accountant"] == "prv"
    assert history["delta"] == pytest.approx(1 / n)  # default delta = 1/N
    assert history["sample_rate"] == 1 / 6 and history["steps"] == 12
    fresh = PRVAccountant()
    for _ in range(history["steps"]):
        fresh.step(noise_multiplier=history["noise_multiplier"], sample_rate=1 / 6)
    assert history["epsilon"] == fresh.get_epsilon(delta=1 / n)
    assert cfg.target_epsilon - 0.05 <= history["epsilon"] <= cfg.target_epsilon + 1e-9
    # PRV is tighter than RDP: the same noise spends more under the RDP bound.
    rdp = RDPAccountant()
    rdp.history = [(history["noise_multiplier"], 1 / 6, 12)]
    assert rdp.get_epsilon(delta=1 / n) > history["epsilon"]


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0, 8.0, 30.0])
def test_calibration_lands_in_opacus_window_with_fewer_accountant_calls(monkeypatch, epsilon):
    q, steps, delta = 0.01, 200, 1e-3
    calls = []
    real = RDPAccountant.get_epsilon

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RDPAccountant, "get_epsilon", counted)
    dp_module._calibrate.cache_clear()
    sigma = dp_module._calibrate(epsilon, delta, q, steps, "rdp")
    ours = len(calls)
    calls.clear()
    reference = get_noise_multiplier(
        target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp"
    )
    theirs = len(calls)
    spent = dp_module.spent_epsilon(sigma, q, steps, delta, "rdp")
    assert epsilon - dp_module.EPSILON_TOLERANCE <= spent <= epsilon
    assert sigma == pytest.approx(reference, rel=0.01)  # the same point of a flat window
    assert ours < theirs, (ours, theirs)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_rdp_calibration_round_trip():
    # N = 1000, expected batch 10: q = 0.01, 200 steps (small q keeps RDP's search fast).
    cfg = DPConfig(**{**RECIPE, "accountant": "rdp", "batch_size": 10, "target_epsilon": 4.0})
    sigma = noise_multiplier(cfg, 1000)
    rdp = RDPAccountant()
    rdp.history = [(sigma, 0.01, 200)]
    assert 4.0 - 0.01 <= rdp.get_epsilon(delta=1e-3) <= 4.0


def test_training_is_deterministic_and_returns_a_plain_model(reference):
    ref_fingerprint, ref_history = reference
    model = tiny_model()
    history = train_dp(model, data(), DPConfig(**RECIPE), pad_id=EOS)
    assert fingerprint(model) == ref_fingerprint
    assert history["epoch_loss"] == ref_history["epoch_loss"] and len(history["epoch_loss"]) == 2
    assert all(math.isfinite(x) for x in history["epoch_loss"])
    assert fingerprint(model) != fingerprint(tiny_model())
    assert history["empty_batches"] == 2  # skipped forward, noisy step still taken and counted
    assert not model.training and not hasattr(model, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert not any(name.startswith("_module.") for name in model.state_dict())


def test_noise_free_control_clips_without_noise_and_claims_no_guarantee(reference):
    """target_epsilon None (the DAG's dp_eps~inf): the same Poisson batches, clipping and step
    budget, no noise; no epsilon is claimed, and the record stays plain JSON."""
    ref_fingerprint, ref_history = reference
    cfg = DPConfig(**{**RECIPE, "target_epsilon": None})
    assert noise_multiplier(cfg, 12) == 0.0
    model = tiny_model()
    history = train_dp(model, data(), cfg, pad_id=EOS)
    assert history["noise_multiplier"] == 0.0 and history["noise_free"]
    assert history["epsilon"] is None and history["target_epsilon"] is None
    assert history["steps"] == ref_history["steps"] and history["empty_batches"] == 2
    assert json.loads(json.dumps(history, allow_nan=False)) == history
    assert fingerprint(model) != ref_fingerprint  # the noise is what the DP model adds
    again = tiny_model()
    train_dp(again, data(), cfg, pad_id=EOS)
    assert fingerprint(again) == fingerprint(model)


def test_poisson_batches_are_a_pure_function_of_the_step():
    assert poisson_rows(1000, 0.1, 3, 7) == poisson_rows(1000, 0.1, 3, 7)
    assert poisson_rows(1000, 0.1, 3, 7) != poisson_rows(1000, 0.1, 3, 8)
    sizes = [len(poisson_rows(1000, 0.1, 3, step)) for step in range(50)]
    assert 90 < sum(sizes) / len(sizes) < 110 and len(set(sizes)) > 5  # Binomial(1000, 0.1)


class Killed(Exception):
    pass


# mid-epoch (resumes from step 2), at the epoch boundary (the next step is empty), late
@pytest.mark.parametrize("kill_at", [3, 6, 11])
def test_resume_is_bitwise_equal(tmp_path, reference, kill_at):
    ref_fingerprint, ref_history = reference

    def kill(step):
        if step == kill_at:
            raise Killed

    model = tiny_model()
    with pytest.raises(Killed):
        train_dp(
            model, data(), DPConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path, on_step=kill
        )
    assert not hasattr(model, "autograd_grad_sample_hooks")  # cleaned up after the error
    resumed = tiny_model()  # a fresh process starts from the initial weights again
    history = train_dp(resumed, data(), DPConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path)
    assert fingerprint(resumed) == ref_fingerprint
    for key in ("epoch_loss", "epsilon", "empty_batches", "tokens"):
        assert history[key] == ref_history[key], key
    assert not tmp_path.exists()


def test_checkpoint_for_other_settings_is_discarded(tmp_path, caplog):
    def kill(step):
        if step == 2:  # after the first checkpoint
            raise Killed

    with pytest.raises(Killed):
        train_dp(
            tiny_model(),
            data(),
            DPConfig(**RECIPE),
            pad_id=EOS,
            checkpoint_dir=tmp_path,
            on_step=kill,
        )
    other = DPConfig(**{**RECIPE, "lr": 1e-3})
    clean = tiny_model()
    train_dp(clean, data(), other, pad_id=EOS)
    restarted = tiny_model()
    with caplog.at_level("WARNING", logger="unlearnbench"):
        train_dp(restarted, data(), other, pad_id=EOS, checkpoint_dir=tmp_path)
    assert "checkpoint discarded" in caplog.text and "config" in caplog.text
    assert fingerprint(restarted) == fingerprint(clean)


def test_unreachable_epsilon_names_the_keys():
    model = tiny_model()
    before = fingerprint(model)
    cfg = DPConfig(**{**RECIPE, "target_epsilon": 0.005, "delta": 1e-5})
    with pytest.raises(
        ValueError,
        match=r"train_dp\.epsilons: target epsilon 0.005 is unreach"
        r"able.*train_dp\.epochs.*train_dp\.batch_size",
    ):
        train_dp(model, data(), cfg, pad_id=EOS)
    assert fingerprint(model) == before and not hasattr(model, "autograd_grad_sample_hooks")


def test_delta_above_one_over_n_is_refused():
    assert resolve_delta(DPConfig(**RECIPE), 12) == 1 / 12
    assert resolve_delta(DPConfig(**{**RECIPE, "delta": 1e-5}), 12) == 1e-5
    with pytest.raises(ValueError, match=r"train_dp\.delta: delta must be <= 1/N = 0\.0833"):
        resolve_delta(DPConfig(**{**RECIPE, "delta": 0.1}), 12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_epsilon": 0}, r"train_dp\.epsilons: target epsilon must be > 0"),
        ({"max_grad_norm": 0}, r"train_dp\.max_grad_norm: must be > 0"),
        ({"accountant": "gdp"}, r"train_dp\.accountant: must be one of"),
        ({"grad_sample_mode": "ew"}, r"train_dp\.grad_sample_mode: must be one of"),
        ({"delta": 0.0}, r"train_dp\.delta: must be in \(0, 1\)"),
    ],
)
def test_bad_config_names_key(change, message):
    with pytest.raises(ValueError, match=message):
        DPConfig(**{**RECIPE, **change})
