"""The process-sharded Fisher against the single-process Woodbury form and the dense inverse.

Two gloo processes on CPU (a FileStore rendezvous: no port), spawned once for the module; each
computes its slices for every case and the parent compares the gathered vectors. World size 1
(no process group, and a real one-process group) must reproduce ``WoodburyFisher`` bit for bit.
"""

from __future__ import annotations

import datetime
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from references.fisher_recursion import correlated_gradients, dense_inverse, rel_err
from unlearnbench.fisher.estimation import FisherConfig, estimate_fisher
from unlearnbench.fisher.launch import launch_command
from unlearnbench.fisher.sharded import (
    ShardedWoodburyFisher,
    estimate_sharded_fisher,
    shard_plan,
    shard_width,
    take_columns,
)
from unlearnbench.fisher.woodbury import WoodburyFisher, check_blocks, fixed_size_blocks
from unlearnbench.models import ModelConfig, build_model

D = 40
BLOCKINGS = {
    "full": None,
    "per_tensor": [(0, 7), (7, 25), (25, 33), (33, 40)],  # some narrower than m: primal
    "fixed_16": fixed_size_blocks(D, 16),
}
SHAPES = {"m>d": 60, "m<d": 16}  # m > d: every block primal, held whole by one rank
DTYPES = {"float64": torch.float64, "float32": torch.float32}
TILES = {"small": {"chunk_columns": 7, "row_block": 5}, "default": {}}
# Sharded (2 ranks) against single-process results: the float32 products' column chunks end at
# other coordinates, nothing else differs, so the two differ by rounding amplified by the
# condition number of K. Measured maxima over CASES: 3.6e-13 (float64), 1.7e-4 (float32; the
# synthetic Gram is ill-conditioned: the single-process result is itself that far from the
# float64 one, and the sharded one is as close, within 1.7x); 5e-8 on a tiny GPT-2's gradients.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-3}
RTOL_GPT2 = 1e-6
NO_WORSE = 3.0  # sharded float32 error / single-process float32 error, both against float64
WORLD = 2
TINY = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)
VOCAB = 50


def vector(d: int, seed: int, dtype) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(100 + seed)).to(dtype)


def cases():
    for shape, m in SHAPES.items():
        for blocking, blocks in BLOCKINGS.items():
            for dname, dtype in DTYPES.items():
                for tiles, kw in TILES.items():
                    yield f"{shape}-{blocking}-{dname}-{tiles}", m, blocks, dtype, kw


def sequences(n: int = 30) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(4, 20, (n,), generator=gen)
    return [torch.randint(1, VOCAB, (int(k),), generator=gen).tolist() for k in lengths]


FISHER_CFGS = {
    blocks: FisherConfig(examples=24, damping=1e-3, blocks=blocks, gradient_method="loop")
    for blocks in ("full", "layer")
}

# The ranks' side: every rank runs every case; results go to one file per rank.


def _worker(rank: int, world: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        results = {}
        for name, m, blocks, dtype, kw in cases():
            G = correlated_gradients(m, D, dtype=dtype)
            pieces = shard_plan(check_blocks(blocks, D), m, rank, world)
            fisher = ShardedWoodburyFisher.from_gradients(
                take_columns(G, pieces), 1e-3, blocks, **kw
            )
            for seed in range(2):
                y = fisher.ihvp(fisher.take(vector(D, seed, dtype)))
                results[f"{name}/ihvp{seed}"] = fisher.gather(y)
            results[f"{name}/diag"] = fisher.gather(fisher.diag_inverse())
            results[f"{name}/diag_empirical"] = fisher.gather(fisher.diag_empirical())
        G = correlated_gradients(16, D)
        for lam in (1e-2, 1e-6):  # against the dense inverse (parent side)
            fisher = ShardedWoodburyFisher.from_gradients(
                take_columns(G, shard_plan([(0, D)], 16, rank, world)), lam
            )
            results[f"dense/{lam}/ihvp"] = fisher.gather(
                fisher.ihvp(fisher.take(vector(D, 0, G.dtype)))
            )
            results[f"dense/{lam}/diag"] = fisher.gather(fisher.diag_inverse())
        model = build_model(TINY, vocab_size=VOCAB, eos_id=0, seed=0)
        for blocking, cfg in FISHER_CFGS.items():
            fisher = estimate_sharded_fisher(model, sequences(), cfg, pad_id=0)
            x = vector(fisher.d, 0, torch.float32)
            results[f"estimate/{blocking}/ihvp"] = fisher.gather(fisher.ihvp(fisher.take(x)))
            results[f"estimate/{blocking}/fingerprint"] = fisher.fingerprint
        # Failures: every rank raises, none is left waiting in a collective.
        G = correlated_gradients(16 + rank, D)
        results["error/m"] = _error(lambda: ShardedWoodburyFisher.from_gradients(G, 1e-3))
        G = correlated_gradients(16, D)
        blocks = [(0, 4), (4, 8), (8, D)]  # primal (owner 0), primal (owner 1), dual
        G[3, 5] = float("nan")  # in the block rank 1 owns
        local = take_columns(G, shard_plan(blocks, 16, rank, world))
        results["error/nan"] = _error(
            lambda: ShardedWoodburyFisher.from_gradients(local, 1e-3, blocks)
        )
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _error(call) -> str:
    try:
        call()
    except ValueError as err:
        return str(err)
    return ""


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("sharded")
    context = mp.start_processes(
        _worker, args=(WORLD, str(out / "store"), str(out)), nprocs=WORLD, join=False,
        start_method="spawn",
    )  # fmt: skip
    for _ in range(60):  # seconds; a hang in a collective fails the test, not the session
        if context.join(timeout=5):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("the sharded workers did not finish in 300 s")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", list(cases()), ids=lambda c: c[0])
def test_two_ranks_equal_the_single_process_fisher(ranks, case):
    name, m, blocks, dtype, kw = case
    G = correlated_gradients(m, D, dtype=dtype)
    single = WoodburyFisher.from_gradients(G, 1e-3, blocks, **kw)
    exact = WoodburyFisher.from_gradients(G.double(), 1e-3, blocks, **kw)
    outputs = {f"ihvp{s}": lambda f, s=s: f.ihvp(vector(D, s, f.gradients.dtype)) for s in range(2)}
    outputs |= {"diag": lambda f: f.diag_inverse(), "diag_empirical": lambda f: f.diag_empirical()}
    for key, output in outputs.items():
        reference, truth = output(single), output(exact)
        for rank in ranks:  # gather gives every rank the whole vector
            got = rank[f"{name}/{key}"]
            assert got.dtype == reference.dtype
            assert rel_err(got, reference) < RTOL[dtype], key
            if dtype == torch.float32:  # as accurate as the single-process float32 result
                assert rel_err(got, truth) <= NO_WORSE * rel_err(reference, truth) + 1e-12, key
    assert torch.equal(ranks[0][f"{name}/ihvp0"], ranks[1][f"{name}/ihvp0"])


@pytest.mark.parametrize("lam", [1e-2, 1e-6])
def test_two_ranks_equal_the_dense_inverse(ranks, lam):
    G = correlated_gradients(16, D)
    F_inv = dense_inverse(G, lam)
    assert rel_err(ranks[0][f"dense/{lam}/ihvp"], F_inv @ vector(D, 0, G.dtype)) < 1e-6
    assert rel_err(ranks[0][f"dense/{lam}/diag"], F_inv.diagonal()) < 1e-6


@pytest.mark.parametrize("blocking", FISHER_CFGS)
def test_sharded_estimation_equals_estimate_fisher(ranks, blocking):
    model = build_model(TINY, vocab_size=VOCAB, eos_id=0, seed=0)
    single = estimate_fisher(model, sequences(), FISHER_CFGS[blocking], pad_id=0)
    x = vector(single.d, 0, torch.float32)
    assert rel_err(ranks[0][f"estimate/{blocking}/ihvp"], single.ihvp(x)) < RTOL_GPT2
    assert ranks[1][f"estimate/{blocking}/fingerprint"] == single.fingerprint


def test_a_failure_on_one_rank_is_raised_on_every_rank(ranks):
    assert all("same m" in rank["error/m"] for rank in ranks)
    assert "NaN" in ranks[1]["error/nan"] and "another rank" in ranks[0]["error/nan"]


# World size 1: the single-process computation, bit for bit.


def _same(sharded: ShardedWoodburyFisher, single: WoodburyFisher, x: torch.Tensor) -> None:
    assert torch.equal(sharded.ihvp(sharded.take(x)), single.ihvp(x))
    assert torch.equal(sharded.diag_inverse(), single.diag_inverse())
    assert torch.equal(sharded.diag_empirical(), single.diag_empirical())
    assert all(torch.equal(a, b) for a, b in zip(sharded.factors, single.factors, strict=True))


@pytest.mark.parametrize("case", list(cases()), ids=lambda c: c[0])
def test_one_process_is_bitwise_the_single_process_fisher(case):
    _, m, blocks, dtype, kw = case
    G = correlated_gradients(m, D, dtype=dtype)
    sharded = ShardedWoodburyFisher.from_gradients(G, 1e-3, blocks, **kw)
    assert sharded.world_size == 1 and sharded.columns == [
        (a, b) for a, b in check_blocks(blocks, D)
    ]
    _same(sharded, WoodburyFisher.from_gradients(G, 1e-3, blocks, **kw), vector(D, 0, dtype))


def test_a_one_rank_process_group_is_bitwise_the_single_process_fisher(tmp_path):
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))  # fmt: skip
    try:
        for _, m, blocks, dtype, kw in cases():
            G = correlated_gradients(m, D, dtype=dtype)
            sharded = ShardedWoodburyFisher.from_gradients(G, 1e-3, blocks, **kw)
            x = vector(D, 1, dtype)
            _same(sharded, WoodburyFisher.from_gradients(G, 1e-3, blocks, **kw), x)
            assert torch.equal(sharded.gather(sharded.ihvp(sharded.take(x))), sharded.ihvp(x))
        model = build_model(TINY, vocab_size=VOCAB, eos_id=0, seed=0)
        for cfg in FISHER_CFGS.values():
            sharded = estimate_sharded_fisher(model, sequences(), cfg, pad_id=0)
            single = estimate_fisher(model, sequences(), cfg, pad_id=0)
            assert torch.equal(sharded.gradients, single.gradients)
            _same(sharded, single, vector(single.d, 0, torch.float32))
    finally:
        dist.destroy_process_group()


# The partition itself (no processes).


@pytest.mark.parametrize("world", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("blocking", BLOCKINGS)
@pytest.mark.parametrize("m", [4, 16, 60])
def test_every_coordinate_is_held_by_exactly_one_rank(world, blocking, m):
    blocks = check_blocks(BLOCKINGS[blocking], D)
    owner = torch.full((D,), -1)
    for rank in range(world):
        pieces = shard_plan(blocks, m, rank, world)
        assert [p.block for p in pieces] == blocks  # every rank sees every block, in order
        offset = 0
        for p in pieces:
            assert p.local == (offset, offset + p.width)
            offset += p.width
            lo, hi = p.columns
            assert (owner[lo:hi] == -1).all()
            owner[lo:hi] = rank
            if not p.dual:
                assert p.width in (0, p.block[1] - p.block[0])  # primal blocks stay whole
        assert offset == shard_width(pieces)
    assert (owner >= 0).all()
    dual_widths = [shard_plan(blocks, m, r, world)[0].width for r in range(world)]
    if shard_plan(blocks, m, 0, world)[0].dual:
        assert max(dual_widths) - min(dual_widths) <= 1  # dual blocks split evenly


def test_take_columns_cuts_rows_and_vectors():
    blocks = check_blocks(BLOCKINGS["per_tensor"], D)
    pieces = shard_plan(blocks, 16, 1, 2)
    full = torch.arange(3 * D).reshape(3, D)
    local = take_columns(full, pieces)
    expected = torch.cat([full[:, a:b] for a, b in (p.columns for p in pieces)], dim=1)
    assert torch.equal(local, expected) and torch.equal(take_columns(full[1], pieces), expected[1])


def test_wrong_columns_are_rejected():
    with pytest.raises(ValueError, match="d = 41"):
        ShardedWoodburyFisher.from_gradients(correlated_gradients(8, D), 1e-3, d=41)
    fisher = ShardedWoodburyFisher.from_gradients(correlated_gradients(8, D), 1e-3)
    with pytest.raises(ValueError, match="shape"):
        fisher.ihvp(torch.ones(D + 1))


def test_launch_command():
    assert launch_command(1, "pkg.worker", ["a"]) == [sys.executable, "-m", "pkg.worker", "a"]
    argv = launch_command(4, "pkg.worker", ["a", "b"])
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in argv and "--nproc-per-node=4" in argv
    assert argv[-4:] == ["-m", "pkg.worker", "a", "b"]
    with pytest.raises(ValueError, match="gpus"):
        launch_command(-1, "pkg.worker")
