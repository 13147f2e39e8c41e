"""Unlearning methods: registry contract, Fisher estimation, a known answer, the stage."""

from __future__ import annotations

import json

import pytest
import torch
from unlearnbench.exposure import Canary
from unlearnbench.fisher import estimation as fisher_estimation
from unlearnbench.fisher.estimation import FisherConfig, estimate_fisher
from unlearnbench.fisher.per_example_grads import parameter_layout, per_example_gradients
from unlearnbench.fisher.woodbury import WoodburyFisher
from unlearnbench.models import ModelConfig, build_model, fingerprint, load_model
from unlearnbench.unlearning import (
    UnlearnContext,
    default_hyper,
    make_method,
    method_names,
    needs_fisher,
    unlearn_stage,
)
from unlearnbench.unlearning.stage import ReplicateData, load_fisher, unlearn_request
from unlearnbench.unlearning.trajectory import CanaryProbe, Trajectory, TrajectoryConfig
from unlearnbench.unlearning.weight_delta import BIN_EDGES, layer_type

VOCAB, EOS = 50, 0
DIGITS = tuple(range(10, 20))  # token ids of the digits 0..9 in the synthetic vocabulary
PREFIXES = {1: (EOS, 5, 6, 7), 2: (EOS, 8, 9, 21), 3: (EOS, 22, 23, 24)}
SECRETS = {1: "123", 2: "907", 3: "555"}
TINY = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)
TRAJECTORY = TrajectoryConfig(samples=20, retain_sample=10, batch_size=16)
FISHER = FisherConfig(examples=12, damping=1e-2, blocks="layer", seed=0)
HYPER = {  # small settings for speed; every method must still move the weights
    "finetune_retain": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
    "fisher_forgetting": {"gamma": 1e-3, "noise": 1.0, "iterations": 2},
    "fisher_removal": {"gamma": 1e-3, "iterations": 2, "refresh_fisher": True},
    "fisher_removal_identity": {"gamma": 1e-3},
    "gradient_ascent": {"lr": 1e-2, "batch_size": 4, "max_steps": 3, "eval_every": 2},
    "grad_diff": {"lr": 1e-2, "batch_size": 4, "max_steps": 3, "eval_every": 2},
    "npo": {"lr": 1e-2, "batch_size": 4, "max_steps": 3, "eval_every": 2},
}


def tiny_model() -> torch.nn.Module:
    return build_model(TINY, vocab_size=VOCAB, eos_id=EOS, seed=0).eval()


def canary_sequence(canary: int) -> list[int]:
    return [*PREFIXES[canary], *(DIGITS[int(c)] for c in SECRETS[canary]), EOS]


def synthetic_replicate() -> ReplicateData:
    """24 random rows of D+, canary 3 (control) twice in D+, canary 1 (group 1) three times
    and canary 2 (group 2) twice in D-."""
    gen = torch.Generator().manual_seed(5)
    corpus = [
        [EOS, *torch.randint(25, VOCAB, (int(torch.randint(3, 10, (1,), generator=gen)),),
                             generator=gen).tolist(), EOS]
        for _ in range(24)
    ]  # fmt: skip
    sequences = corpus + [canary_sequence(3)] * 2 + [canary_sequence(1)] * 3
    sequences += [canary_sequence(2)] * 2
    probes = [
        CanaryProbe(c, group, reps, Canary("", SECRETS[c], (), tuple(PREFIXES[c]), DIGITS))
        for c, group, reps in ((1, 1, 3), (2, 2, 2), (3, 0, 2))
    ]
    return ReplicateData(
        sequences=sequences,
        forget_rows=[26, 27, 28, 29, 30],
        forget_groups=[1, 1, 1, 2, 2],
        retain_rows=list(range(26)),
        probes=probes,
        pad_id=EOS,
    )


def run(method: str, groups=None, seed: int = 3) -> tuple[torch.nn.Module, dict]:
    model = tiny_model()
    manifest = unlearn_request(
        model,
        make_method(method, HYPER[method]),
        synthetic_replicate(),
        groups,
        fisher=None,
        fisher_cfg=FISHER,
        trajectory_cfg=TRAJECTORY,
        seed=seed,
    )
    return model, manifest


# Registry


def test_registry_lists_every_method():
    assert method_names() == [
        "finetune_retain",
        "fisher_forgetting",
        "fisher_removal",
        "fisher_removal_identity",
        "grad_diff",
        "gradient_ascent",
        "npo",
    ]
    assert [needs_fisher(m) for m in method_names()] == [
        False, True, True, False, False, False, False
    ]  # fmt: skip
    from unlearnbench import method_names as light  # torch-free copy read by the Snakefile

    assert sorted(light.METHODS) == method_names()
    assert {m for m in method_names() if needs_fisher(m)} == set(light.NEEDS_FISHER)
    for name in method_names():
        assert make_method(name, {}).name == name  # defaults alone are valid


def test_unknown_method_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError) as err:
        make_method("foo", {})
    assert str(err.value) == (
        "unlearn.methods: unknown method 'foo'; known methods: finetune_retain, "
        "fisher_forgetting, fisher_removal, fisher_removal_identity, grad_diff, "
        "gradient_ascent, npo"
    )
    with pytest.raises(ValueError, match="known methods"):
        needs_fisher("foo")


@pytest.mark.parametrize(
    ("method", "hyper", "message"),
    [
        ("fisher_removal", {"gamma": -1}, r"gamma: must be > 0, got -1"),
        ("fisher_removal", {"gama": 1.0}, r"gama: unknown hyperparameter"),
        ("fisher_removal", {"iterations": 1.5}, r"iterations: must be an int"),
        ("fisher_removal", {"iterations": 0}, r"iterations: must be >= 1"),
        ("fisher_removal", {"refresh_fisher": "yes"}, r"refresh_fisher: must be true or false"),
        ("fisher_forgetting", {"newton": 1}, r"newton: must be true or"),
        ("fisher_forgetting", {"noise": -1e-6}, r"noise: must be >= 0"),
        ("fisher_forgetting", {"noise_floor": 0}, r"noise_floor: must be > 0"),
        ("fisher_forgetting", {"noise": float("nan")}, r"noise: must be fin"),
        ("gradient_ascent", {"lr": None}, r"lr: must be set"),
        ("gradient_ascent", {"exposure_threshold": -1}, r"exposure_threshold: must be >= 0"),
        ("gradient_ascent", {"batch_size": True}, r"batch_size: must be a n"),
        ("finetune_retain", {"epochs": 0}, r"epochs: must be >= 1"),
        ("finetune_retain", {"lr": "fast"}, r"lr: must be a number"),
    ],
)
def test_bad_hyperparameters_name_the_key(method, hyper, message):
    with pytest.raises(ValueError, match=rf"^unlearn\.methods\.{method}\." + message):
        make_method(method, hyper)


def test_null_threshold_and_integral_floats_are_accepted():
    method = make_method("gradient_ascent", {"exposure_threshold": None, "max_steps": 4.0})
    assert method.hyper["exposure_threshold"] is None and method.hyper["max_steps"] == 4


# Contract: every method, same interface


@pytest.mark.parametrize("method", method_names())
def test_every_method_changes_weights_deterministically(method):
    model, manifest = run(method)
    _, again = run(method)
    assert manifest["fingerprint_after"] != manifest["fingerprint_before"]
    assert manifest["fingerprint_after"] == again["fingerprint_after"]  # bitwise on CPU
    assert fingerprint(model) == manifest["fingerprint_after"]
    assert manifest["trajectory"] == again["trajectory"]
    assert manifest["steps"] >= 1 and manifest["trajectory"][0]["step"] == 0
    for point in manifest["trajectory"]:
        assert point["forget_loss"] is not None and point["retain_loss"] is not None
        assert [c["role"] for c in point["canaries"]] == ["removed", "removed", "control"]
        assert 0 <= point["exposure_removed_mean"] <= 3 * 3.33
    delta = manifest["weight_delta"]
    assert delta["overall"]["l2"] > 0
    assert sum(delta["overall"]["counts"]) == sum(p.numel() for p in model.parameters())
    assert len(delta["overall"]["counts"]) == len(BIN_EDGES) + 1
    assert set(delta["by_type"]) == {"embeddings", "attention", "mlp", "layernorm"}  # tied head
    assert manifest["forget_rows"] == [26, 27, 28, 29, 30]
    assert json.loads(json.dumps(manifest, allow_nan=False)) == manifest  # plain JSON


def test_seed_changes_the_fisher_forgetting_noise():
    _, a = run("fisher_forgetting", seed=3)
    _, b = run("fisher_forgetting", seed=4)
    assert a["fingerprint_after"] != b["fingerprint_after"]


def test_fisher_forgetting_without_noise_is_fisher_removal():
    step = {"gamma": 1e-3, "iterations": 1}
    with_noise_off = tiny_model()
    forgetting = unlearn_request(
        with_noise_off,
        make_method("fisher_forgetting", {**step, "noise": 0.0}),
        synthetic_replicate(),
        None,
        fisher=None,
        fisher_cfg=FISHER,
        trajectory_cfg=TRAJECTORY,
        seed=3,
    )
    removal_model, _ = run_with("fisher_removal", step)
    assert forgetting["result"]["noise_norms"] == [0.0]
    for a, b in zip(with_noise_off.parameters(), removal_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_fisher_forgetting_noise_is_sized_by_the_newton_term():
    _, manifest = run_with("fisher_forgetting", {"gamma": 1e-3, "noise": 2.0, "iterations": 1})
    result = manifest["result"]
    ratio = result["noise_norms"][0] / result["newton_norms"][0]
    assert ratio == pytest.approx(2.0, rel=0.1)  # E||w n|| = 1 for a unit-norm shape w
    assert result["noise_shape_max_over_min"] > 1.05  # shaped by D+'s curvature, not isotropic


def test_noise_shape_matches_an_explicit_loop_and_is_largest_where_curvature_is_least():
    from unlearnbench.unlearning.fisher_forgetting import noise_shape

    diagonal = torch.tensor([0.0, 1e-6, 0.5, 2.0, 8.0], dtype=torch.float64)
    floor = 0.01
    mean = sum(diagonal.tolist()) / len(diagonal)
    raw = [(d + floor * mean) ** -0.25 for d in diagonal.tolist()]
    norm = sum(r * r for r in raw) ** 0.5
    torch.testing.assert_close(noise_shape(diagonal, floor), torch.tensor(raw) / norm,
                               check_dtype=False)  # fmt: skip
    shape = noise_shape(diagonal, floor).tolist()
    assert shape == sorted(shape, reverse=True)
    flat = noise_shape(torch.zeros(4, dtype=torch.float64), floor)
    torch.testing.assert_close(flat, torch.full((4,), 0.5, dtype=torch.float64))


def run_with(method: str, hyper: dict, seed: int = 3) -> tuple[torch.nn.Module, dict]:
    model = tiny_model()
    manifest = unlearn_request(
        model,
        make_method(method, hyper),
        synthetic_replicate(),
        None,
        fisher=None,
        fisher_cfg=FISHER,
        trajectory_cfg=TRAJECTORY,
        seed=seed,
    )
    return model, manifest


def test_trajectory_uses_the_same_candidates_at_every_step():
    """Two measurements at the same weights are identical: each canary's candidates come from
    a freshly seeded generator, not from one stream that advances between steps."""
    data, model = synthetic_replicate(), tiny_model()
    forget = [data.sequences[i] for i in data.forget_rows]
    trajectory = Trajectory(forget, data.sequences[:10], data.probes, EOS, TRAJECTORY, seed=0)
    first, second = trajectory.measure(model, 0), trajectory.measure(model, 1)
    assert {**first, "step": 1} == second
    assert first["exposure_control_mean"] is not None and first["exposure_removed_mean"] is None


def test_gradient_ascent_stops_at_the_exposure_threshold():
    model = tiny_model()
    hyper = {**HYPER["gradient_ascent"], "exposure_threshold": 1e9, "max_steps": 50}
    manifest = unlearn_request(
        model, make_method("gradient_ascent", hyper), synthetic_replicate(), None,
        fisher=None, fisher_cfg=None, trajectory_cfg=TRAJECTORY, seed=0,
    )  # fmt: skip
    assert manifest["steps"] == 0 and manifest["result"]["stopped_early"]
    assert manifest["fingerprint_after"] == manifest["fingerprint_before"]


def test_layer_types_of_gpt2_and_opt_names():
    assert layer_type("transformer.wte.weight") == "embeddings"
    assert layer_type("transformer.h.0.attn.c_attn.weight") == "attention"
    assert layer_type("transformer.h.0.mlp.c_fc.bias") == "mlp"
    assert layer_type("transformer.h.0.ln_1.weight") == "layernorm"
    assert layer_type("lm_head.weight") == "lm_head"
    assert layer_type("model.decoder.layers.0.self_attn_layer_norm.weight") == "layernorm"
    assert layer_type("model.decoder.layers.0.self_attn.k_proj.weight") == "attention"
    assert layer_type("model.decoder.layers.0.fc1.weight") == "mlp"


# Fisher estimation


def test_fisher_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"^fisher\.damping: must be > 0, got -1$"):
        FisherConfig(examples=8, damping=-1)
    with pytest.raises(ValueError, match=r"^fisher\.blocks: unknown 'rows'"):
        FisherConfig(examples=8, damping=1e-3, blocks="rows")
    with pytest.raises(ValueError, match=r"^fisher\.gradient_method: unknown"):
        FisherConfig(examples=8, damping=1e-3, gradient_method="magic")
    with pytest.raises(ValueError, match=r"^fisher\.examples: must be >= 2"):
        FisherConfig(examples=0, damping=1e-3)


def test_more_fisher_examples_than_retained_rows_uses_all_of_them(caplog):
    retain = synthetic_replicate().sequences[:20]
    with caplog.at_level("WARNING"):
        fisher = estimate_fisher(
            tiny_model(), retain, FisherConfig(examples=2048, damping=1e-3), EOS
        )
    assert fisher.m == 20
    assert "fisher.examples = 2048 exceeds the retained set (20 examples)" in caplog.text
    with pytest.raises(ValueError, match="the retained set is empty"):
        estimate_fisher(tiny_model(), [], FisherConfig(examples=8, damping=1e-3), EOS)


def test_chunked_estimate_equals_one_call_and_blocks_follow_the_config(monkeypatch):
    model, retain = tiny_model(), synthetic_replicate().sequences[:26]
    monkeypatch.setattr(fisher_estimation, "GRADIENT_CHUNK", 5)
    fisher = estimate_fisher(model, retain, FISHER, EOS)
    rows = fisher_estimation.fisher_sample(len(retain), FISHER)
    batch = fisher_estimation.collate([retain[i] for i in rows], EOS)
    reference = per_example_gradients(model, batch.input_ids, batch.attention_mask, batch.labels)
    assert torch.equal(fisher.gradients, reference)
    layout = parameter_layout(model)
    assert fisher.blocks == [(s.start, s.stop) for s in layout]
    assert fisher.parameter_names == [s.name for s in layout]
    assert fisher.fingerprint == fingerprint(model) and fisher.m == FISHER.examples
    fixed = estimate_fisher(model, retain, FisherConfig(12, 1e-2, "fixed", 1000), EOS)
    assert [b - a for a, b in fixed.blocks][:-1] == [1000] * (len(fixed.blocks) - 1)
    assert len(estimate_fisher(model, retain, FisherConfig(12, 1e-2), EOS).blocks) == 1


def test_fisher_of_other_weights_is_refused(tmp_path):
    model = tiny_model()
    fisher = estimate_fisher(model, synthetic_replicate().sequences[:26], FISHER, EOS)
    paths = (tmp_path / "fisher.safetensors", tmp_path / "fisher.json")
    fisher.save(*paths)
    data = synthetic_replicate()
    assert load_fisher(paths, model, data).fingerprint == fingerprint(model)
    other = build_model(TINY, vocab_size=VOCAB, eos_id=EOS, seed=1)
    with pytest.raises(ValueError, match=r"fisher\.json: .*rerun estimate_fisher for this model"):
        load_fisher(paths, other, data)


# A known answer


def test_fisher_removal_step_lands_on_the_retrained_ridge_optimum():
    """Linear regression, L_r = mean squared error over D+ / 2 + lam |w|^2 / 2, L_f the same
    over D- without the ridge; the model is trained on L = L_r + (n_f / n_r) L_f. The exact
    Hessian of L_r is lam I + X_r^T X_r / n_r: the Woodbury Fisher of the rows x_i with damping
    lam. One Fisher Removal step with gamma = 1 (the Newton step: the context's |D-| / |D+| is
    n_f / n_r) must land on argmin L_r (retraining)."""
    gen = torch.Generator().manual_seed(0)
    d, n_r, n_f, lam = 6, 40, 8, 0.05
    X_r, X_f = (torch.randn(n, d, generator=gen, dtype=torch.float64) for n in (n_r, n_f))
    w_true = torch.randn(d, generator=gen, dtype=torch.float64)
    y_r = X_r @ w_true + 0.1 * torch.randn(n_r, generator=gen, dtype=torch.float64)
    y_f = X_f @ -w_true  # the forget set pulls hard the other way
    eye = torch.eye(d, dtype=torch.float64)
    H_r, H_f = X_r.T @ X_r / n_r + lam * eye, X_f.T @ X_f / n_r
    w_full = torch.linalg.solve(H_r + H_f, X_r.T @ y_r / n_r + X_f.T @ y_f / n_r)
    w_retrained = torch.linalg.solve(H_r, X_r.T @ y_r / n_r)

    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_full[None])

    def forget_objective(net, rows):
        X = torch.stack([x for x, _ in rows])
        y = torch.stack([t for _, t in rows])
        loss = 0.5 * (net(X)[:, 0] - y).square().mean()
        return torch.autograd.grad(loss, net.weight)[0].reshape(-1), float(loss.detach())

    ctx = UnlearnContext(
        forget=list(zip(X_f, y_f, strict=True)),
        retain=[],
        pad_id=0,
        seed=0,
        record=lambda step, **extra: {"step": step},
        fisher=WoodburyFisher.from_gradients(X_r, lam),
        objective=forget_objective,
        forget_weight=n_f / n_r,
    )
    method = make_method("fisher_removal", {"gamma": 1.0, "iterations": 1})
    assert method.run(model, ctx)["steps"] == 1
    assert torch.allclose(model.weight[0].detach(), w_retrained, atol=1e-10)
    assert not torch.allclose(w_full, w_retrained, atol=1e-2)


# The stage on files (the replicate_files fixture: tests/unit/conftest.py)


def test_unlearn_stage_saves_the_model_and_a_manifest(replicate_files):
    replicate, root = replicate_files, replicate_files.train.parent
    manifest = unlearn_stage(
        "gradient_ascent", HYPER["gradient_ascent"], replicate, None, TRAJECTORY.__dict__,
        root / "ga", groups=[2],
    )  # fmt: skip
    assert fingerprint(load_model(root / "ga")) == manifest["fingerprint_after"]
    assert manifest["groups"] == [2] and manifest["fisher"] is None
    assert [p["step"] for p in manifest["trajectory"]] == [0, 2, 3]
    assert set(manifest["seconds"]) == {"total", "unlearning", "fisher", "trajectory"}
    with pytest.raises(ValueError, match=r"request groups \[7\] are not in the forget set"):
        unlearn_stage(
            "gradient_ascent", {}, replicate, None, TRAJECTORY.__dict__, root / "none", groups=[7]
        )
    with pytest.raises(ValueError, match=r"^unlearn\.trajectory\.sample: unknown key"):
        unlearn_stage("gradient_ascent", {}, replicate, None, {"sample": 3}, root / "x")


def test_schema_method_blocks_equal_the_registry_hyperparameters():
    """Every method's config block offers exactly the registry's hyperparameters, with the same
    defaults, so a config that validates is one the method accepts as it is."""
    from unlearnbench.settings import load_schema

    blocks = load_schema()["properties"]["unlearn"]["properties"]["methods"]["properties"]
    assert sorted(blocks) == method_names()
    for name in method_names():
        schema_defaults = {key: spec["default"] for key, spec in blocks[name]["properties"].items()}
        assert schema_defaults == default_hyper(name), name
