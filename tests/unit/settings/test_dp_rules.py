"""train_dp's cross-field rules: an epsilon no noise can reach is refused before any job, for
the dataset sizes the config allows, with the very accounting a train_dp job calibrates with
(a practical epsilon never loads the accountant, i.e. torch: tests/unit/test_planner.py);
ghost clipping of tied embeddings is refused."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from snakemake_runner import config_of
from unlearnbench.dp_budget import steps_per_epoch, sweep_extra_steps
from unlearnbench.settings import ConfigError, validate_config, without
from unlearnbench.training.dp_accounting import noise_multiplier
from unlearnbench.training.dp_sweep import dp_settings

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")


def config(**train_dp):
    """The default config with train_dp changed."""
    cfg = copy.deepcopy(config_of("config.yaml"))
    cfg["train_dp"].update(train_dp)
    return cfg


def resolved(cfg):
    """``cfg`` with its defaults filled (train_dp's epochs and batch size take the fine-tune's)
    by a validation without the epsilon under test (8: the claims' arm)."""
    cfg = copy.deepcopy(cfg)
    cfg["train_dp"]["epsilons"] = [8]
    return validate_config(cfg)


def bounds(cfg):
    """The fewest and most training sequences the config allows (the canary copies; the
    capped split plus them)."""
    data, can = cfg["data"], cfg["canaries"]
    copies = sum(can["repetitions"]) * can["per_repetition"]
    held_out = data["validation_fraction"] + data["test_fraction"]
    return copies, int(data["max_examples"] * (1 - held_out)) + copies


def job_refuses(cfg, epsilon, n):
    """Whether a train_dp job on n sequences refuses epsilon (its recipe as the adapter builds
    it, the sweep's steps as sweep_dp accounts them)."""
    block = without(cfg["train_dp"], "epsilons", "replicates", "noise_free_control")
    recipe, sweep = dp_settings(block, epsilon, seed=0)
    total = steps_per_epoch(n, recipe.batch_size) * recipe.epochs
    extra = sweep_extra_steps(total, len(sweep.lrs), sweep.fraction)
    recipe = replace(recipe, extra_accounted_steps=extra)
    try:
        noise_multiplier(recipe, n)
    except ValueError:
        return True
    return False


def test_unreachable_epsilon_is_refused_naming_the_key_and_the_fix():
    cfg = config(epsilons=[8, 0.05], accountant="rdp", delta=1e-5)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert message.startswith("train_dp.epsilons[1]: target epsilon 0.05 is unreachable")
    assert "train_dp.accountant: prv" in message and "data.max_examples" in message
    # The job would refuse it too, at every N the config allows.
    full = resolved(cfg)
    lo, hi = bounds(full)
    assert job_refuses(full, 0.05, lo) and job_refuses(full, 0.05, hi)


def test_epsilons_the_job_can_reach_pass():
    # PRV reaches 0.05 where RDP cannot (its floor is its 0.01 error bound).
    cfg = config(epsilons=[8, 0.05], accountant="prv", delta=1e-5)
    full = validate_config(cfg)
    lo, hi = bounds(full)
    assert not job_refuses(full, 0.05, lo) and not job_refuses(full, 0.05, hi)
    validate_config(config(epsilons=[8, 0.5], accountant="rdp", delta=1e-5))


def test_ghost_clipping_of_tied_embeddings_is_refused_unless_they_are_frozen():
    with pytest.raises(ConfigError, match=r"^train_dp\.grad_sample_mode: ghost clipping .*tied"):
        validate_config(config(grad_sample_mode="ghost"))
    validate_config(config(grad_sample_mode="ghost", trainable="last_block"))
    for mode in ("lean", "folded", "hooks", "functorch", "vmap"):
        validate_config(config(grad_sample_mode=mode))
