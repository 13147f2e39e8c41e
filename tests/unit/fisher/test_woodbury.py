"""Woodbury/Cholesky inverse Fisher against the dense inverse and the paper's literal recursion."""

from __future__ import annotations

import json

import pytest
import torch
from references.fisher_recursion import (
    correlated_gradients,
    dense_inverse,
    literal_recursion,
    recursion_factors,
    rel_err,
)
from unlearnbench.fisher.woodbury import WoodburyFisher, check_blocks, fixed_size_blocks

D = 40
# Full; per-"tensor" (uneven widths, some narrower than m: primal form); fixed size, short last.
BLOCKINGS = {
    "full": None,
    "per_tensor": [(0, 7), (7, 25), (25, 33), (33, 40)],
    "fixed_16": fixed_size_blocks(D, 16),
}
SHAPES = {"m>d": 60, "m<d": 16}


def small_tiles(G, lam, blocks):
    """Tiny column chunks and row tiles so that every tiling loop runs several times."""
    return WoodburyFisher.from_gradients(G, lam, blocks, chunk_columns=7, row_block=5)


@pytest.mark.parametrize("lam", [1e-2, 1e-6])
@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_equals_dense_inverse(shape, blocking, lam):
    m, blocks = SHAPES[shape], BLOCKINGS[blocking]
    G = correlated_gradients(m, D)
    fisher = small_tiles(G, lam, blocks)
    F_inv = dense_inverse(G, lam, blocks)
    for seed in range(3):
        x = torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert rel_err(fisher.ihvp(x), F_inv @ x) < 1e-6
    assert rel_err(fisher.diag_inverse(), F_inv.diagonal()) < 1e-6


@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_equals_literal_recursion(shape, blocking):
    m, blocks = SHAPES[shape], BLOCKINGS[blocking]
    G, lam = correlated_gradients(m, D), 1e-3
    fisher = small_tiles(G, lam, blocks)
    literal = literal_recursion(G, lam, blocks, progress=False)
    x = torch.randn(D, dtype=torch.float64)
    assert rel_err(fisher.ihvp(x), literal.ihvp(x)) < 1e-9
    assert rel_err(fisher.diag_inverse(), literal.diag_inverse()) < 1e-9
    # Not just the same inverse: the Cholesky factors give the paper's own h_i and den_i.
    derived = recursion_factors(fisher)
    assert rel_err(derived.H, literal.H) < 1e-9
    assert rel_err(derived.den, literal.den) < 1e-9


def test_dense_inverse_is_the_damped_fisher():
    G, lam = correlated_gradients(8, 5), 0.1
    F = lam * torch.eye(5, dtype=torch.float64) + G.T @ G / 8
    assert torch.allclose(dense_inverse(G, lam) @ F, torch.eye(5, dtype=torch.float64))


def test_block_order_does_not_matter_and_default_tiles_agree():
    G, lam = correlated_gradients(16, D), 1e-3
    blocks = BLOCKINGS["per_tensor"]
    x = torch.randn(D, dtype=torch.float64)
    reference = small_tiles(G, lam, blocks).ihvp(x)
    shuffled = WoodburyFisher.from_gradients(G, lam, blocks[::-1])
    assert rel_err(shuffled.ihvp(x), reference) < 1e-9


def test_float32_storage_is_close_to_float64():
    G64, lam = correlated_gradients(16, D), 1e-2
    fisher = WoodburyFisher.from_gradients(G64.float(), lam)
    F_inv = dense_inverse(G64.float(), lam)
    x = torch.randn(D)
    y = fisher.ihvp(x)
    assert y.dtype == torch.float32
    assert rel_err(y, F_inv @ x.double()) < 1e-4
    assert rel_err(fisher.diag_inverse(), F_inv.diagonal()) < 1e-4


def test_gradients_are_kept_not_copied():
    G = correlated_gradients(16, D, dtype=torch.float32)
    assert WoodburyFisher.from_gradients(G, 1e-3).gradients.data_ptr() == G.data_ptr()


@pytest.mark.parametrize(
    "blocks, message",
    [
        ([(0, 10), (12, 40)], "without gaps"),
        ([(0, 20), (10, 40)], "overlaps"),
        ([(0, 20), (20, 30)], "d = 40"),
        ([(0, 0), (0, 40)], "empty"),
    ],
)
def test_bad_blocks_are_rejected(blocks, message):
    with pytest.raises(ValueError, match=message):
        check_blocks(blocks, D)


def test_bad_inputs_are_rejected():
    G = correlated_gradients(4, D)
    with pytest.raises(ValueError, match="positive"):
        WoodburyFisher.from_gradients(G, 0.0)
    G[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        WoodburyFisher.from_gradients(G, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        WoodburyFisher.from_gradients(correlated_gradients(4, D), 1e-3).ihvp(torch.ones(D + 1))


# Artifacts


@pytest.fixture
def saved(tmp_path):
    G = correlated_gradients(16, D, dtype=torch.float32)
    fisher = WoodburyFisher.from_gradients(
        G, 1e-3, BLOCKINGS["per_tensor"], fingerprint="abc123", parameter_names=["w", "b"],
        chunk_columns=7, row_block=5,
    )  # fmt: skip
    fisher.diag_inverse()
    paths = tmp_path / "fisher.safetensors", tmp_path / "fisher.json"
    fisher.save(*paths)
    return fisher, paths


def test_save_load_round_trip(saved):
    fisher, paths = saved
    loaded = WoodburyFisher.load(*paths, expected_fingerprint="abc123")
    x = torch.randn(D)
    assert torch.equal(loaded.ihvp(x), fisher.ihvp(x))
    assert torch.equal(loaded.diag_inverse(), fisher.diag_inverse())
    assert loaded.blocks == fisher.blocks and loaded.lam == fisher.lam
    assert loaded.parameter_names == ["w", "b"]
    meta = json.loads(paths[1].read_text())
    assert (meta["m"], meta["d"], meta["dtype"]) == (16, D, "float32")
    assert meta["fingerprint"] == "abc123" and meta["lambda"] == 1e-3
    assert meta["block_forms"] == ["primal", "dual", "primal", "primal"]
    assert meta["cost"]["setup_wall_s"] >= 0 and meta["tensors_file"] == "fisher.safetensors"


def test_tensor_file_header_has_one_metadata_entry(saved):
    """safetensors writes metadata entries in a per-process random order: with more than one,
    the same Fisher saved by two runs would differ in its bytes (it did, before)."""
    _, paths = saved
    with paths[0].open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"] == {"fingerprint": "abc123"}


def test_fingerprint_mismatch_names_file_and_fix(saved):
    _, paths = saved
    with pytest.raises(ValueError, match=r"fisher\.json.*rerun estimate_fisher"):
        WoodburyFisher.load(*paths, expected_fingerprint="other-model")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_tensor_file_is_a_clear_error(saved, damage):
    _, (tensors, meta) = saved
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * len(data))
    with pytest.raises(ValueError, match=r"fisher\.safetensors: corrupted or truncated.*rerun"):
        WoodburyFisher.load(tensors, meta)


def test_tensors_from_another_run_are_rejected(saved, tmp_path):
    _, (tensors, _) = saved
    other = WoodburyFisher.from_gradients(correlated_gradients(16, D), 1e-3, fingerprint="zzz")
    other.save(tmp_path / "other.safetensors", tmp_path / "other.json")
    with pytest.raises(ValueError, match="different runs"):
        WoodburyFisher.load(tensors, tmp_path / "other.json")


# The method's foundation


def test_newton_step_from_full_optimum_lands_on_retained_optimum():
    """L = L_r + L_f with L_p(theta) = 1/2 (theta - a_p)^T A_p (theta - a_p). From the full-data
    optimum theta*, theta* + H_r^{-1} grad L_f(theta*) is the retained optimum a_r exactly
    (grad L_r(theta*) = -grad L_f(theta*)): Fisher Removal with gamma = 1 on a quadratic."""
    d, m, lam = 12, 30, 0.05
    gen = torch.Generator().manual_seed(3)
    G_r = torch.randn(m, d, generator=gen, dtype=torch.float64)
    A_r = lam * torch.eye(d, dtype=torch.float64) + G_r.T @ G_r / m  # the damped Fisher
    B = torch.randn(d, d, generator=gen, dtype=torch.float64)
    A_f = B @ B.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    a_r, a_f = (torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(2))
    theta_star = torch.linalg.solve(A_r + A_f, A_r @ a_r + A_f @ a_f)
    grad_forget = A_f @ (theta_star - a_f)
    newton_dense = theta_star + dense_inverse(G_r, lam) @ grad_forget
    newton_woodbury = theta_star + WoodburyFisher.from_gradients(G_r, lam).ihvp(grad_forget)
    assert torch.allclose(newton_dense, a_r, atol=1e-10)
    assert torch.allclose(newton_woodbury, a_r, atol=1e-10)
    assert not torch.allclose(theta_star, a_r, atol=1e-2)  # the step does move theta


@pytest.mark.parametrize("shape", SHAPES)
def test_empirical_diagonal_equals_the_dense_one(shape):
    G = correlated_gradients(SHAPES[shape], D)
    fisher = small_tiles(G, 1e-3, None)
    dense = (G.double().T @ G.double() / G.shape[0]).diagonal()
    assert rel_err(fisher.diag_empirical(), dense) < 1e-12
