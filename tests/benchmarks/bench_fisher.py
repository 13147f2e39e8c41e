"""Benchmark: Woodbury/Cholesky set-up of the inverse Fisher against the paper's literal recursion.

    python tests/benchmarks/bench_fisher.py [--d D] [--m 64 256 1024]

Gradients are random (computing 1024 real per-example gradients is slow, and timings do not
depend on the values): each row is isotropic noise plus a shared rank-8 part, both of norm ~1,
so the Gram matrix is correlated like real gradients, though better conditioned. d defaults to
a 2 x 128 GPT-2 (GPT2LMHeadModel n_layer 2, n_embd 128, n_head 4, n_positions 128, vocab 8192;
four times the embedded default, so the ratios hold for the harder case).

Each row runs in its own subprocess so that its peak RSS (VmHWM, reset between phases) is its
own. The literal recursion is run in full up to --literal-full-max; beyond that its time is
extrapolated from timed steps: step i costs a + b*i exactly (two matrix-vector passes over
h_1..h_{i-1}), so steps timed at sampled i give the total sum_{i<m} (a + b*i). The rows where
both are available print the extrapolation next to the measured time as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from references.fisher_recursion import literal_recursion, literal_step
from unlearnbench.fisher.woodbury import WoodburyFisher, uses_dual_form

LOW_RANK = 8


def default_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=2, n_embd=128, n_head=4, n_positions=128, vocab_size=8192,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)


def default_model_layout():
    from unlearnbench.fisher.per_example_grads import parameter_layout

    return parameter_layout(default_model())


def grads_child(n: int) -> dict:
    """Real per-example gradients of the default model: loop vs vmap, n sequences of 128."""
    from unlearnbench.fisher.per_example_grads import per_example_gradients

    model = default_model()
    ids = torch.randint(0, 8192, (n, 128), generator=torch.Generator().manual_seed(2))
    seconds, grads = {}, {}
    for method in ("loop", "vmap"):
        grads[method], seconds[method] = timed(
            lambda method=method: per_example_gradients(model, ids, method=method, progress=False)
        )
    rel_diff = max_rel(grads["vmap"], grads["loop"])
    return {"n": n, "loop_s": seconds["loop"], "vmap_s": seconds["vmap"], "rel_diff": rel_diff}


def rss_mb() -> tuple[float, float]:
    """(current, peak since last reset) resident memory of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def random_gradients(m: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(m, d, generator=gen).div_(d**0.5)
    C = torch.randn(m, LOW_RANK, generator=gen) / LOW_RANK**0.5
    for lo in range(0, d, 1 << 16):  # shared low-rank part, added in chunks: no second m x d
        hi = min(lo + (1 << 16), d)
        G[:, lo:hi] += C @ (torch.randn(LOW_RANK, hi - lo, generator=gen) / d**0.5)
    return G


def timed(fn, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: normwise, so near-zero entries of b don't dominate."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def max_rel_elementwise(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / |b| over entries (for diag(F^-1), whose entries are all positive)."""
    return float(((a.double() - b.double()).abs() / b.double().abs()).max())


def extrapolated_literal_s(G: torch.Tensor, m_total: int, lam: float) -> float:
    """Time literal_step at sampled i on the real (m, d) sizes and sum the fitted a + b*i.
    G doubles as the store of h_1..h_{i-1} (values don't change the cost); row i is restored."""
    m = G.shape[0]
    samples = sorted({1, m // 4, m // 2, 3 * m // 4, m - 1})
    den = torch.ones(m, dtype=torch.float64)
    xs, ts = [], []
    for i in samples:
        saved = G[i].clone()
        _, t = timed(lambda i=i: literal_step(G, G, den, i, lam), repeats=3)
        G[i] = saved
        xs.append(i)
        ts.append(t)
    slope, intercept = statistics.linear_regression(xs, ts)
    return m_total * intercept + slope * m_total * (m_total - 1) / 2


def child(kind: str, m: int, d: int, lam: float, literal_full_max: int) -> dict:
    if kind == "grads":
        return grads_child(m)
    blocks = None
    if kind == "blocks":
        layout = default_model_layout()
        if layout[-1].stop == d:
            blocks, blocking = [(s.start, s.stop) for s in layout], "per parameter tensor"
        else:  # --d is not the model's: no tensors to follow
            blocks, blocking = [(lo, min(lo + 65536, d)) for lo in range(0, d, 65536)], "fixed"
    G = random_gradients(m, d)
    row: dict = {"kind": kind, "m": m, "d": d, "G_mb": G.numel() * 4 / 2**20}
    if blocks is not None:
        row["n_blocks"], row["blocking"] = len(blocks), blocking
        row["n_primal"] = sum(not uses_dual_form(b - a, m) for a, b in blocks)
    x = torch.randn(d, generator=torch.Generator().manual_seed(1)) / d**0.5

    reset_peak()
    fisher, row["fast_setup_s"] = timed(lambda: WoodburyFisher.from_gradients(G, lam, blocks))
    row["fast_setup_peak_mb"] = rss_mb()[1]
    y_fast, row["fast_ihvp_s"] = timed(lambda: fisher.ihvp(x), repeats=3)
    diag_fast, row["fast_diag_s"] = timed(fisher.diag_inverse)
    row["fast_peak_mb"] = rss_mb()[1]

    row["literal_extrapolated_s"] = extrapolated_literal_s(G, m, lam) if blocks is None else None
    if m <= literal_full_max:
        reset_peak()
        factors, row["literal_setup_s"] = timed(lambda: literal_recursion(G, lam, blocks))
        y_lit, row["literal_ihvp_s"] = timed(lambda: factors.ihvp(x), repeats=3)
        diag_lit, row["literal_diag_s"] = timed(factors.diag_inverse)
        row["literal_peak_mb"] = rss_mb()[1]
        row["rel_diff_ihvp"] = max_rel(y_fast, y_lit)
        row["rel_diff_diag"] = max_rel_elementwise(diag_fast, diag_lit)
    return row


def run_child(kind: str, m: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--m", str(m), "--d", str(args.d)]
    cmd += ["--lam", str(args.lam), "--literal-full-max", str(args.literal_full_max)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=None, help="gradient dimension (default: model)")
    parser.add_argument("--m", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--lam", type=float, default=1e-4)
    parser.add_argument("--literal-full-max", type=int, default=256)
    parser.add_argument("--block-m", type=int, default=256, help="m of the per-tensor row")
    parser.add_argument("--grads", type=int, default=32, help="real per-example grads (0: skip)")
    parser.add_argument("--child", choices=["full", "blocks", "grads"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.d is None:
        args.d = default_model_layout()[-1].stop
    if args.child:
        row = child(args.child, args.m[0], args.d, args.lam, args.literal_full_max)
        print(json.dumps(row))
        return

    print(f"bench_fisher: d = {args.d:,}, lambda = {args.lam:g}, float32 G, float64 m x m algebra")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    print("gradients: RANDOM (noise + shared rank-8 part, row norms ~1.4), not model gradients")
    print("literal = the paper's recursion as matrix-vector passes (fisher_recursion.literal_step)")
    print(f"  run in full for m <= {args.literal_full_max}, else EXTRAPOLATED from timed steps")
    print("fast set-up = Gram + Cholesky (ready for F^-1 x); diag = its first diag(F^-1) call")
    print(
        "diff ihvp = max|fast - literal| / max|literal|; diff diag = max_k |fast_k/literal_k - 1|"
    )
    print("peak = process VmHWM (MiB), reset before each phase; literal peak includes its H\n")
    head = (
        f"{'variant':<10}{'m':>6}{'G MiB':>8}{'fast set-up s':>15}{'diag s':>8}{'ihvp s':>8}"
        f"{'peak MiB':>10}{'literal s':>11}{'(extrap.)':>11}{'lit ihvp s':>11}{'lit peak':>10}"
        f"{'diff ihvp':>11}{'diff diag':>11}"
    )
    print(head)
    rows = [run_child("full", m, args) for m in args.m]
    rows.append(run_child("blocks", args.block_m, args))  # per-tensor
    for r in rows:
        print(
            f"{r['kind']:<10}{r['m']:>6}{r['G_mb']:>8.0f}"
            f"{r['fast_setup_s']:>15.2f}{r['fast_diag_s']:>8.2f}{r['fast_ihvp_s']:>8.3f}"
            f"{max(r['fast_setup_peak_mb'], r['fast_peak_mb']):>10.0f}"
            f"{fmt(r.get('literal_setup_s')):>11}{fmt(r.get('literal_extrapolated_s')):>11}"
            f"{fmt(r.get('literal_ihvp_s'), '.3f'):>11}{fmt(r.get('literal_peak_mb'), '.0f'):>10}"
            f"{fmt(r.get('rel_diff_ihvp'), '.1e'):>11}{fmt(r.get('rel_diff_diag'), '.1e'):>11}"
        )
    for r in rows:
        if r["kind"] == "blocks":
            print(
                f"blocks: {r['blocking']} ({r['n_blocks']} blocks), "
                f"{r['n_primal']} narrower than m = {r['m']} (primal n x n form)"
            )
    if args.grads:
        g = run_child("grads", args.grads, args)
        at_1024 = 1024 * g["loop_s"] / g["n"]
        print(
            f"real per-example gradients of the default model, {g['n']} sequences x 128 tokens: "
            f"loop {g['loop_s']:.2f} s, vmap {g['vmap_s']:.2f} s "
            f"(max rel diff {g['rel_diff']:.1e}); m=1024 by loop ~{at_1024:.0f} s"
        )
    print()
    for r in rows:
        if r["kind"] != "full":
            continue
        literal = r.get("literal_setup_s") or r["literal_extrapolated_s"]
        source = "measured" if r.get("literal_setup_s") else "extrapolated"
        print(
            f"m={r['m']}: speed-up literal/fast set-up {literal / r['fast_setup_s']:.1f}x, "
            f"literal/(fast set-up + diag) {literal / (r['fast_setup_s'] + r['fast_diag_s']):.1f}x"
            f" (literal {source})"
        )
    last = [r for r in rows if r["kind"] == "full"][-1]
    literal = last.get("literal_setup_s") or last["literal_extrapolated_s"]
    speed_up = literal / last["fast_setup_s"]
    print(f"fisher set-up speed-up at m={last['m']} (literal/fast): {speed_up:.1f}x")


if __name__ == "__main__":
    main()
