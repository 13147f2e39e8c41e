"""Fisher estimation's memory plan: shapes against real models, the formula against numbers
worked out by hand, the refusal's key and advice, and the paper-scale table's shape."""

from __future__ import annotations

import pytest
import torch
from references.fisher_recursion import MatrixRows, correlated_gradients
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM
from unlearnbench.fisher import memory
from unlearnbench.fisher.matrix_free import MatrixFreeFisher
from unlearnbench.fisher.memory import (
    GPU_MB,
    MB,
    MODELS,
    ModelShape,
    fewest_gpus,
    fisher_memory,
    gpu_refusal,
    largest_m,
    markdown_table,
)
from unlearnbench.fisher.sharded import shard_plan
from unlearnbench.fisher.woodbury import check_blocks
from unlearnbench.planner import scratch_parameters

PUBLISHED = {  # parameters, tied LM head once
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "facebook/opt-125m": 125_239_296,
    "facebook/opt-350m": 331_196_416,
    "facebook/opt-1.3b": 1_315_758_080,
    "facebook/opt-2.7b": 2_651_596_800,
}
# 1 layer, width 4, 1 head, vocabulary 10, 8 positions. Tensors: wte 40, wpe 32, ln_1 4 + 4,
# c_attn 48 + 12, attn c_proj 16 + 4, ln_2 4 + 4, c_fc 64 + 16, mlp c_proj 64 + 4, ln_f 4 + 4.
TOY = ModelShape("toy", "gpt2", n_layer=1, width=4, n_head=1, vocab=10, positions=8)
TOY_D = 324


def hub_model(shape: ModelShape) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: nothing allocated, nothing downloaded
        if shape.family == "gpt2":
            return GPT2LMHeadModel(
                GPT2Config(n_layer=shape.n_layer, n_embd=shape.width, n_head=shape.n_head,
                           n_positions=shape.positions, vocab_size=shape.vocab)
            )  # fmt: skip
        return OPTForCausalLM(
            OPTConfig(num_hidden_layers=shape.n_layer, hidden_size=shape.width,
                      ffn_dim=4 * shape.width, num_attention_heads=shape.n_head,
                      word_embed_proj_dim=shape.embed_dim or shape.width, vocab_size=shape.vocab,
                      max_position_embeddings=shape.positions,
                      do_layer_norm_before=shape.final_norm)
        )  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_shapes_are_the_published_models(name):
    shape = MODELS[name]
    assert shape.d == PUBLISHED[name]
    real = sorted(p.numel() for p in hub_model(shape).parameters())  # tied tensors once
    assert sorted(shape.tensor_sizes()) == real  # the per-tensor blocks too


def test_scratch_shape_is_the_planners_gpt2():
    model = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128}
    assert memory.scratch_shape(model, 2048).d == scratch_parameters(model, 2048) == 239_360
    assert TOY.d == TOY_D and sum(memory.block_widths(TOY, "fixed", 100)) == TOY_D


def test_cpu_peak_by_hand():
    need = fisher_memory(TOY, 8, 8, device="cpu", gradient_method="loop", process_mb=0)
    weights = 4 * TOY_D  # 1296
    # one example's gradient + activations (8 tokens x (70 x 4 + 10 x 1 x 8) x 4 B) + logits
    workspace = 4 * TOY_D + 8 * 360 * 4 + 12 * 8 * 10  # 13776
    G = 8 * TOY_D * 4  # 10368
    factor, setup = 8 * 8 * 8, 4 * 8 * 8 * 8  # one dual block: L, and ~4 m x m while factoring
    assert need.host_mb * MB == pytest.approx(weights + G + max(workspace, factor + setup))
    assert need.gpu_mb == 0 and need.parts["G"] * MB == G


def test_two_gpu_device_peak_by_hand():
    need = fisher_memory(TOY, 8, 8, gpus=2, gradient_method="loop", process_mb=100)
    stored = 8 * 162 * 4  # half the columns each
    row_buffer = 4 * TOY_D  # the full-width row in flight
    workspace = 4 * TOY_D + 8 * 360 * 4 + 12 * 8 * 10
    cuda = memory.CUDA_CONTEXT_MB * MB
    assert need.gpu_mb * MB == pytest.approx(cuda + 4 * TOY_D + stored + workspace + row_buffer)
    assert need.host_mb * MB == pytest.approx(2 * (100 * MB + stored + 512))  # saving G, L


def test_vmap_holds_sixteen_gradients_and_bfloat16_halves_g():
    loop = fisher_memory(TOY, 8, 8, gradient_method="loop")
    vmap = fisher_memory(TOY, 8, 8, gradient_method="vmap")
    extra = 15 * 4 * TOY_D + memory.activation_bytes(TOY, 15, 8)
    assert (vmap.gpu_mb - loop.gpu_mb) * MB == pytest.approx(extra)
    assert fisher_memory(TOY, 8, 8, gradient_method="auto", device="cpu").parts == (
        fisher_memory(TOY, 8, 8, gradient_method="loop", device="cpu").parts
    )
    half = fisher_memory(MODELS["gpt2"], 256, 64, dtype="bfloat16", gradient_method="loop")
    assert half.parts["G"] * 2 == fisher_memory(MODELS["gpt2"], 256, 64).parts["G"]


@pytest.mark.parametrize("gpus", [1, 2, 3])
def test_layer_blocks_factors_follow_the_shard_plan(gpus):
    """m = 50: two dual blocks (the 64-wide MLP matrices), the rest primal, round robin."""
    m = 50
    widths = TOY.tensor_sizes()
    blocks, start = [], 0
    for w in widths:
        blocks.append((start, start + w))
        start += w
    blocks = check_blocks(blocks, TOY_D)
    busiest = max(
        sum(p.width**2 for p in shard_plan(blocks, m, rank, gpus) if not p.dual)
        for rank in range(gpus)
    )
    need = fisher_memory(TOY, m, 8, blocks="layer", gpus=gpus)
    assert need.parts["factors"] * MB == 8 * (2 * m * m + busiest)
    if gpus == 1:  # by hand: 40^2 + 32^2 + 8 x 4^2 + 48^2 + 12^2 + 2 x 16^2
        assert busiest == 5712
    # Widest primal block 48: its m x n float64 copy and two n x n, below 4 m x m.
    assert need.parts["set-up"] * MB == 8 * max(4 * m * m, m * 48 + 2 * 48 * 48)


def test_storage_modes_order_the_gpu_need():
    shape, m = MODELS["facebook/opt-1.3b"], 256
    device, host, free = (
        fisher_memory(shape, m, 336, storage=s, gradient_method="loop")
        for s in ("device", "host", "matrix_free")
    )
    assert free.gpu_mb < device.gpu_mb and host.gpu_mb < device.gpu_mb
    assert free.host_mb < host.host_mb  # matrix-free keeps no G anywhere
    assert host.parts["G (host)"] == device.parts["G"]
    with pytest.raises(ValueError, match=r"fisher\.storage"):
        fisher_memory(shape, m, 336, storage="disk")


def test_fewest_gpus_and_largest_m_are_the_boundaries():
    shape, kw = MODELS["gpt2"], {"gradient_method": "loop"}
    gpus = fewest_gpus(shape, 1024, 336, **kw)
    assert gpus == 7
    assert fisher_memory(shape, 1024, 336, gpus=gpus, **kw).gpu_mb <= GPU_MB
    assert fisher_memory(shape, 1024, 336, gpus=gpus - 1, **kw).gpu_mb > GPU_MB
    m = largest_m(shape, 336, 1, **kw)
    assert (
        fisher_memory(shape, m, 336, **kw).fits()
        and not fisher_memory(shape, m + 1, 336, **kw).fits()
    )


def test_refusal_names_the_key_the_numbers_and_the_fixes():
    shape = MODELS["gpt2"]
    assert gpu_refusal(shape, 64, 336, gradient_method="loop") is None
    message = gpu_refusal(shape, 1024, 336, gradient_method="loop")
    need = fisher_memory(shape, 1024, 336, gradient_method="loop").gpu_mb
    assert message.startswith("fisher.examples: rule estimate_fisher would need about ")
    assert f"{need:,.0f} MB per GPU on 1 GPU" in message and f"{GPU_MB:,} MB" in message
    assert "m = 1024 gradients of d = 124,439,808" in message
    assert "ask for 7 GPUs (resources gpu=7" in message
    assert f"lower fisher.examples to {largest_m(shape, 336, 1, gradient_method='loop')}" in message
    assert "set fisher.storage: host" in message


def test_matrix_free_peak_by_hand():
    """Two chunks of recompute_rows gradients, one example's workspace, the Gram sums beside
    the factors; one chunk when it holds all m rows."""
    need = fisher_memory(TOY, 8, 8, storage="matrix_free", gradient_method="loop",
                         recompute_rows=3, process_mb=0)  # fmt: skip
    workspace = 4 * TOY_D + 8 * 360 * 4 + 12 * 8 * 10
    factor, setup = 8 * 8 * 8, 4 * 8 * 8 * 8
    cuda = memory.CUDA_CONTEXT_MB * MB
    chunks = 2 * 3 * 4 * TOY_D
    assert need.gpu_mb * MB == pytest.approx(
        cuda + 4 * TOY_D + chunks + workspace + 2 * factor + setup
    )
    whole = fisher_memory(TOY, 8, 8, storage="matrix_free", gradient_method="loop",
                          recompute_rows=50, process_mb=0)  # fmt: skip
    assert whole.parts["recomputed chunks"] * MB == 8 * 4 * TOY_D
    assert fisher_memory(TOY, 8, 8, storage="matrix_free", gpus=4).gpus == 1  # one process


def test_setup_gradients_and_the_largest_recompute_rows():
    assert memory.setup_gradients(256, 256) == 256
    assert memory.setup_gradients(256, 1) == 256 * 257 // 2
    assert memory.setup_gradients(10, 4) == 4 + (4 + 4) + (2 + 8)  # chunks of 4, 4, 2
    for m, rows in ((60, 1), (60, 7), (10, 4), (16, 100)):  # what the set-up really computes
        source = MatrixRows(correlated_gradients(m, 8, dtype=torch.float32), rows)
        fisher = MatrixFreeFisher.set_up(source, 1e-3)
        assert fisher.cost["setup_gradients"] == memory.setup_gradients(m, rows)
    shape, kw = MODELS["facebook/opt-2.7b"], {"gradient_method": "loop"}
    rows = memory.largest_recompute_rows(shape, 256, 336, **kw)
    free = {"storage": "matrix_free", **kw}
    assert rows >= 1 and fisher_memory(shape, 256, 336, recompute_rows=rows, **free).fits()
    assert not fisher_memory(shape, 256, 336, recompute_rows=rows + 1, **free).fits()


def test_matrix_free_refusals_name_recompute_rows_and_one_gpu():
    shape = MODELS["facebook/opt-2.7b"]
    kw = {"storage": "matrix_free", "gradient_method": "loop"}
    message = gpu_refusal(shape, 256, 336, recompute_rows=16, **kw)
    rows = memory.largest_recompute_rows(shape, 256, 336, gradient_method="loop")
    assert message.startswith("fisher.recompute_rows: rule estimate_fisher would need about ")
    assert f"lower fisher.recompute_rows to {rows}" in message and "ask for" not in message
    assert gpu_refusal(shape, 256, 336, recompute_rows=rows, **kw) is None
    two = gpu_refusal(shape, 256, 336, gpus=2, recompute_rows=rows, **kw)
    assert two.startswith("fisher.storage: matrix_free runs in one process")


def test_a_vmap_workspace_that_cannot_fit_names_the_gradient_method():
    message = gpu_refusal(MODELS["gpt2-medium"], 16, 336, gradient_method="vmap", gpus=8)
    assert message.startswith("fisher.gradient_method: ") and "vmap holds 16" in message
    assert "set fisher.gradient_method: loop" in message


def test_the_table_has_every_model_m_and_gpu_count():
    text = markdown_table()
    sections = text.split("**storage: ")[1:]
    assert [s.split("**")[0] for s in sections] == list(memory.STORAGE_MODES)
    for storage, section in zip(memory.STORAGE_MODES, sections, strict=True):
        rows = [line for line in section.splitlines() if line.startswith("|")]
        header, rule, body = rows[0], rows[1], rows[2:]
        pipes = 9 if storage == "matrix_free" else 11  # 8 or 10 columns
        assert header.count("|") == rule.count("|") == pipes
        assert all(row.count("|") == pipes for row in body)
        assert len(body) == len(MODELS) * len(memory.TABLE_EXAMPLES)
        assert [row.split(" | ")[2] for row in body[:4]] == ["16", "64", "256", "1024"]
        labels = {row.split(" | ")[0].lstrip("| ") for row in body}
        assert labels == {shape.label for shape in MODELS.values()}
    # Known corners: GPT-2 at m = 16 fits one GPU; OPT-2.7b at m = 1024 nowhere.
    device = [line for line in sections[0].splitlines() if line.startswith("|")]
    assert device[2].startswith("| GPT-2 124M | 124 M | 16 |") and device[2].endswith("| 1 |")
    assert device[-1].startswith("| OPT-2.7b |") and device[-1].endswith("| none |")
    # matrix_free fits OPT-2.7b at m = 1024 on one GPU, recomputing 2 rows at a time
    free = [line for line in sections[2].splitlines() if line.startswith("|")]
    assert free[-1].startswith("| OPT-2.7b | 2,652 M | 1024 | 10,115.0 | 2 |")


def test_cli_prints_the_table(capsys):
    assert memory.main(["--table"]) == 0
    assert capsys.readouterr().out == markdown_table()
    assert memory.main(["--table", "--blocks", "layer"]) == 0
    assert "blocks layer" in capsys.readouterr().out
