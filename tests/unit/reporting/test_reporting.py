"""Tables and figures from synthetic metrics files: numbers, shapes, files, masking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from unlearnbench.reporting import figures_studies, figures_unlearning, loaders, paths, tables
from unlearnbench.reporting.render import Table, write_table

DATASETS = ["news", "wiki"]
SEEDS = [0, 1, 2]
METHODS = ["fisher_removal", "gradient_ascent"]
EPSILONS = ["1", "8"]
K = 2
SPACE = 10**4
CEILING = math.log2(SPACE)


def value(dataset: str, seed: int, model: str, what: str) -> float:
    """A distinct, known number for every (dataset, seed, model, metric)."""
    base = {"test_ppl": 100.0, "forget": 8.0, "forget_max": 12.0, "control": 3.0}[what]
    return base + 10 * DATASETS.index(dataset) + seed + 0.01 * (sum(map(ord, model)) % 50)


def _canaries(dataset, seed, model):
    records = []
    for cid in range(6):
        group = 0 if cid < 2 else 1 + (cid - 2) % K
        forget = group > 0
        exposure = (
            value(dataset, seed, model, "forget") - cid * 0.1
            if forget
            else value(dataset, seed, model, "control")
        )
        records.append(
            {
                "canary_id": cid,
                "group": group,
                "in_forget_set": forget,
                "repetitions": [1, 4][cid % 2],
                "space_size": SPACE,
                "estimator": "both",
                "exposure_exact": exposure,
                "exposure_extrapolated": exposure + 0.05,
                "extracted": cid == 3,
                "rank": 1,
                "secret_log_perplexity": 10.0,
            }
        )
    return records


def _summary(records):
    out = {}
    for part, chosen in (
        ("forget", [r for r in records if r["in_forget_set"]]),
        ("control", [r for r in records if not r["in_forget_set"]]),
    ):
        for key in ("exposure_exact", "exposure_extrapolated"):
            vals = [r[key] for r in chosen]
            out[f"{key}_{part}_mean"] = float(np.mean(vals))
            out[f"{key}_{part}_max"] = float(np.max(vals))
        out[f"extraction_rate_{part}"] = float(np.mean([r["extracted"] for r in chosen]))
        out[f"{part}_canaries"] = len(chosen)
    return out


def _provenance():
    return {"git": {"commit": "abc123def4567890", "dirty": False}, "params": {}, "seeds": {}}


def write_eval(root: Path, dataset, seed, model):
    records = _canaries(dataset, seed, model)
    ppl = value(dataset, seed, model, "test_ppl")
    doc = {
        "dataset": dataset,
        "seed": seed,
        "model_name": model,
        "perplexity": {
            split: {"perplexity": ppl, "loss": math.log(ppl), "tokens": 100, "examples": 5}
            for split in ("test", "retain_sample", "forget")
        },
        "canaries": records,
        "summary": _summary(records),
        "provenance": _provenance(),
        "cost": {"wall_time_s": 1.0, "peak_memory_mb": 10.0},
    }
    path = root / f"results/eval/{dataset}/seed~{seed}/{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def write_manifest(root: Path, dataset, seed, model, name, **extra):
    path = root / f"results/models/{dataset}/seed~{seed}/{model}/{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    cost = {"wall_time_s": 10.0 * (seed + 1), "peak_memory_mb": 100.0 + seed}
    path.write_text(json.dumps({"cost": cost, "provenance": _provenance(), **extra}))
    return path


def write_unlearn(root: Path, dataset, seed, method):
    """An unlearn.json in the format unlearnbench.unlearning.stage writes."""
    trajectory = [
        {
            "step": step,
            "forget_loss": 1.0 + step,
            "retain_loss": 2.0,
            "canaries": [
                {"canary_id": c, "role": "removed", "exposure": 10.0 - step - 0.5 * c}
                for c in range(2, 6)
            ]
            + [{"canary_id": 0, "role": "control", "exposure": 3.0}],
            "exposure_removed_mean": 10.0 - step,
            "exposure_control_mean": 3.0,
        }
        for step in range(4)
    ]
    inner = [-(10.0**e) for e in range(0, -9, -1)] + [10.0**e for e in range(-8, 1)]
    counts = [0] * (len(inner) + 1)
    counts[8:11] = [5, 80, 5]
    hist = {"counts": counts, "l2": 0.5, "max_abs": 0.1}
    delta = {"bin_edges": inner, "overall": hist, "by_type": {"attention": hist, "mlp": hist}}
    return write_manifest(
        root,
        dataset,
        seed,
        f"unlearned~{method}",
        "unlearn.json",
        method=method,
        trajectory=trajectory,
        weight_delta=delta,
    )


@pytest.fixture
def study(tmp_path):
    """Every metrics file the report rules read, for 2 datasets x 3 seeds."""
    files = {k: [] for k in ("evals", "train", "unlearn", "fisher", "dp", "cycles", "onion")}
    for d in DATASETS:
        for s in SEEDS:
            for model in ["original", "retrained"]:
                files["evals"].append(write_eval(tmp_path, d, s, model))
                files["train"].append(write_manifest(tmp_path, d, s, model, "train.json"))
            for m in METHODS:
                files["evals"].append(write_eval(tmp_path, d, s, f"unlearned~{m}"))
                files["unlearn"].append(write_unlearn(tmp_path, d, s, m))
                for k in range(1, K + 1):
                    files["cycles"].append(write_eval(tmp_path, d, s, f"cycle~{k}~{m}"))
            for eps in EPSILONS:
                files["dp"].append(write_eval(tmp_path, d, s, f"dp_eps~{eps}"))
                files["train"].append(
                    write_manifest(
                        tmp_path, d, s, f"dp_eps~{eps}", "train.json",
                        epsilon=float(eps) * 0.98, target_epsilon=float(eps), delta=1e-5,
                    )
                )  # fmt: skip
            fisher = tmp_path / f"results/fisher/{d}/seed~{s}/manifest.json"
            fisher.parent.mkdir(parents=True, exist_ok=True)
            fisher.write_text(json.dumps({"m": 64, "d": 1000, "cost": {"wall_time_s": 5.0}}))
            files["fisher"].append(fisher)
            for selection, shift in (("targeted", 1.5), ("random", 0.1)):
                onion = tmp_path / f"results/onion/{d}/seed~{s}/{selection}.json"
                onion.parent.mkdir(parents=True, exist_ok=True)
                before = {str(c): 2.0 + c for c in range(6)}
                after = {str(c): 2.0 + c + shift for c in range(6)}
                onion.write_text(
                    json.dumps(
                        {
                            "removed_canary_ids": [4, 5],
                            "control_before": before,
                            "control_after": after,
                        }
                    )
                )
                files["onion"].append(onion)
    return tmp_path, files


def outputs(root: Path, stem: str) -> dict[str, str]:
    return {ext: str(root / f"results/tables/{stem}.{ext}") for ext in ("csv", "md", "tex", "html")}


def test_main_table_mean_std_over_seeds(study):
    root, files = study
    main_evals = [p for p in files["evals"]]
    manifests = [p for p in files["train"] if "dp_eps" not in str(p)] + files["unlearn"]
    out = outputs(root, "main")
    table = tables.make_main_table(main_evals, manifests, files["fisher"], METHODS, out)
    data = table.data
    # One row per dataset x model, in the documented order.
    assert len(data) == len(DATASETS) * (2 + len(METHODS))
    assert list(data.loc[data["dataset"] == "news", "model"]) == [
        "original", "retrained", "unlearned~fisher_removal", "unlearned~gradient_ascent",
    ]  # fmt: skip
    row = data[(data["dataset"] == "wiki") & (data["model"] == "retrained")].iloc[0]
    expected = [value("wiki", s, "retrained", "test_ppl") for s in SEEDS]
    assert row["test_ppl_mean"] == pytest.approx(np.mean(expected))
    assert row["test_ppl_std"] == pytest.approx(np.std(expected, ddof=1))
    assert row["n_seeds"] == 3
    # Forget exposure mean of the file = mean of canaries 2..5 (value - 0.1 * cid).
    forget = [value("wiki", s, "retrained", "forget") - 0.35 for s in SEEDS]
    assert row["exposure_forget_mean_mean"] == pytest.approx(np.mean(forget))
    assert row["extraction_forget_mean"] == pytest.approx(0.25)
    assert row["wall_time_s_mean"] == pytest.approx(20.0)  # 10, 20, 30 s
    assert row["ceiling_bits"] == pytest.approx(CEILING)
    # The Fisher estimate is charged to second-order methods only.
    fisher = data.set_index(["dataset", "model"])["fisher_time_s_mean"]
    assert fisher[("news", "unlearned~fisher_removal")] == pytest.approx(5.0)
    assert math.isnan(fisher[("news", "unlearned~gradient_ascent")])
    for ext, path in out.items():
        assert Path(path).stat().st_size > 0, ext
    csv = pd.read_csv(out["csv"])
    assert len(csv) == len(data)
    md = Path(out["md"]).read_text()
    assert f"{np.mean(expected):.1f} ± {np.std(expected, ddof=1):.1f}" in md
    assert "\\toprule" in Path(out["tex"]).read_text()
    assert "<table" in Path(out["html"]).read_text()
    assert "abc123def4567890" in md


def test_one_seed_shows_mean_without_std(study):
    _, files = study
    evals = [p for p in files["evals"] if "seed~0" in str(p)]
    manifests = [p for p in files["train"] if "seed~0" in str(p)]
    table = tables.main_table(
        loaders.load_evaluations(evals), loaders.load_model_costs(manifests), None, METHODS
    )
    assert (table.data["n_seeds"] == 1).all()
    assert not table.display["test perplexity"].str.contains("±").any()


def test_dp_table_epsilons_beside_methods(study):
    root, files = study
    evals = [p for p in files["evals"] if "retrained" not in str(p)] + files["dp"]
    dp_manifests = [p for p in files["train"] if "dp_eps" in str(p)]
    table = tables.make_dp_table(evals, dp_manifests, METHODS, outputs(root, "dp"))
    data = table.data
    assert len(data) == len(DATASETS) * (1 + len(METHODS) + len(EPSILONS))
    dp = data[data["family"] == "dp"].set_index(["dataset", "model"])
    assert dp.loc[("news", "dp_eps~8"), "target_epsilon_mean"] == pytest.approx(8.0)
    assert dp.loc[("news", "dp_eps~8"), "epsilon_spent_mean"] == pytest.approx(7.84)
    orig = [value("news", s, "original", "test_ppl") for s in SEEDS]
    dp8 = [value("news", s, "dp_eps~8", "test_ppl") for s in SEEDS]
    change = [100 * (b / a - 1) for a, b in zip(orig, dp8, strict=True)]
    assert dp.loc[("news", "dp_eps~8"), "ppl_change_pct_mean"] == pytest.approx(np.mean(change))
    # DP rows sorted by epsilon, after the unlearning methods.
    news = list(data.loc[data["dataset"] == "news", "model"])
    assert news.index("dp_eps~1") < news.index("dp_eps~8")
    assert news.index("unlearned~gradient_ascent") < news.index("dp_eps~1")


def test_cost_table_groups_benchmarks_by_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    paths = []
    for rule, job, seconds, rss in [
        ("finetune", "news/seed~0", 30.0, 500.0),
        ("finetune", "news/seed~1", 50.0, 700.0),
        ("evaluate", "news/seed~0/original", 10.0, 300.0),
        ("train_tokenizer", "", 2.0, "NA"),
    ]:
        path = tmp_path / "results/benchmarks" / rule / f"{job or rule}.tsv"
        if not job:
            path = tmp_path / f"results/benchmarks/{rule}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            header + f"{seconds}\t0:00:{int(seconds)}\t{rss}\t1\t1\t1\t0\t0\t50\t{seconds / 2}\n"
        )
        paths.append(path)
    table = tables.make_cost_table(paths, outputs(tmp_path, "cost"))
    data = table.data.set_index("rule")
    assert list(table.data["rule"]) == ["finetune", "evaluate", "train_tokenizer"]
    assert data.loc["finetune", "jobs"] == 2
    assert data.loc["finetune", "total_s"] == pytest.approx(80.0)
    assert data.loc["finetune", "mean_s"] == pytest.approx(40.0)
    assert data.loc["finetune", "max_rss_mb"] == pytest.approx(700.0)
    assert data.loc["finetune", "share_pct"] == pytest.approx(100 * 80 / 92)
    assert math.isnan(data.loc["train_tokenizer", "max_rss_mb"])


def _secrets(root: Path, dataset: str, seed: int, model: str, rows):
    path = root / f"results/realworld/{dataset}/seed~{seed}/secrets_{model}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["masked", "kind", "occurrences", "exposure", "extracted"]).to_csv(
        path, index=False
    )
    return path


MASKS = ["j***@***.edu#1a2b3c4d", "k***@e***.com#0badc0de", "<phone#deadbeef>", "***#00112233"]


def test_realworld_table_ranks_and_finds_indelible(tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(
            _secrets(tmp_path, "usenet", seed, "original", [
                [MASKS[0], "email", 9, 12.0 + seed, True],
                [MASKS[1], "email", 3, 6.0, False],
                [MASKS[2], "phone", 2, 8.0, False],
                [MASKS[3], "email", 1, 0.5, False],  # never memorised: not listed
            ])
        )  # fmt: skip
        paths.append(
            _secrets(tmp_path, "usenet", seed, "fisher_removal", [
                [MASKS[0], "email", 9, 11.0, True],  # survives: extracted
                [MASKS[1], "email", 3, 0.5, False],  # removed
                [MASKS[2], "phone", 2, 1.0, False],  # removed
                [MASKS[3], "email", 1, 0.2, False],
            ])
        )  # fmt: skip
        paths.append(
            _secrets(tmp_path, "usenet", seed, "gradient_ascent", [
                [MASKS[0], "email", 9, 9.0, False],  # survives: exposure above threshold
                [MASKS[1], "email", 3, 5.0, False],  # survives
                [MASKS[2], "phone", 2, 1.5, False],  # removed
                [MASKS[3], "email", 1, 0.2, False],
            ])
        )  # fmt: skip
    out = outputs(tmp_path, "realworld")
    table = tables.make_realworld_table(paths, 2.0, METHODS, 50, out)
    data = table.data
    assert list(data["masked"]) == [MASKS[0], MASKS[2], MASKS[1]]  # ranked by exposure
    assert data.loc[0, "score_original"] == pytest.approx(12.5)  # mean over seeds
    assert list(data["indelible"]) == [True, False, False]
    assert list(data["removed_fisher_removal"]) == [False, True, True]
    assert list(data["removed_gradient_ascent"]) == [False, True, False]
    for ext, path in out.items():
        text = Path(path).read_text()
        assert text, ext
        for mask in MASKS[:3]:
            assert mask.split("#")[1][:8] in text
    for column in ("masked",):
        assert data[column].map(lambda v: bool(loaders.MASK_RE.match(v))).all()


def test_realworld_table_uses_the_stages_own_decisions(tmp_path):
    """find_secrets/unlearn_realworld files carry excess, memorised and removed: the table reports
    those decisions instead of re-deriving them from a threshold."""
    columns = ["masked", "kind", "occurrences", "exposure", "extracted", "excess", "memorised"]
    rows = {
        "original": [
            [MASKS[0], "email", 4, 1.0, False, 9.0, True],
            [MASKS[1], "email", 2, 6.0, False, 5.0, True],
            [MASKS[2], "phone", 1, 6.0, False, 0.5, False],  # not memorised: not listed
        ],
        "fisher_removal": [
            [MASKS[0], "email", 4, 1.0, False, 7.0, True, False],
            [MASKS[1], "email", 2, 6.0, False, 0.2, True, True],
            [MASKS[2], "phone", 1, 6.0, False, 0.1, False, True],
        ],
    }
    paths = []
    for model, data in rows.items():
        path = tmp_path / f"results/realworld/usenet/seed~0/secrets_{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = ["removed"] if model != "original" else []
        pd.DataFrame(data, columns=columns + extra).to_csv(path, index=False)
        paths.append(path)
    data = tables.make_realworld_table(
        paths, 2.0, ["fisher_removal"], 50, outputs(tmp_path, "rw")
    ).data
    assert list(data["masked"]) == [MASKS[0], MASKS[1]]
    assert list(data["score_original"]) == [9.0, 5.0]
    assert list(data["removed_fisher_removal"]) == [False, True]
    assert list(data["indelible"]) == [True, False]


def test_unmasked_address_never_reaches_a_table(tmp_path):
    path = _secrets(
        tmp_path, "usenet", 0, "original", [["jdoe@cs.cmu.edu", "email", 3, 12.0, True]]
    )
    with pytest.raises(ValueError, match="not a masked secret") as err:
        tables.make_realworld_table([path], 2.0, METHODS, 50, outputs(tmp_path, "rw"))
    assert "jdoe" not in str(err.value)
    assert not (tmp_path / "results/tables/rw.csv").exists()
    # The writer itself refuses any table with an address or phone number in a text cell.
    for leak in ("contact: jdoe@cs.cmu.edu", "call (412) 268-3000"):
        frame = pd.DataFrame({"text": [leak], "x": [1.0]})
        with pytest.raises(ValueError, match="unmasked"):
            write_table(Table("t", frame, frame, []), *outputs(tmp_path, "leak").values())
        assert not (tmp_path / "results/tables/leak.csv").exists()


def _assert_figure(png: Path, pdf: Path):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_figures_written_and_deterministic(study):
    root, files = study
    fig_dir = root / "results/figures"
    originals = [p for p in files["evals"] if p.name == "original.json"]
    unlearned = [p for p in files["evals"] if "unlearned~" in p.name]
    dp_and_more = [p for p in files["evals"] if "cycle~" not in p.name] + files["dp"]
    scaling = root / "results/scaling/fisher_scaling.csv"
    scaling.parent.mkdir(parents=True)
    pd.DataFrame(
        [
            {"model_label": label, "d": d, "m": m, "gradient_s": m * d * 1e-6,
             "setup_s": m * m * d * 1e-9, "ihvp_s": 0.01, "peak_memory_mb": m * d * 4e-6}
            for label, d in (("gpt2-tiny", 10**5), ("gpt2-small", 10**6))
            for m in (16, 64, 256)
        ]
    ).to_csv(scaling, index=False)  # fmt: skip
    jobs = {
        "trajectory": lambda p, q: figures_unlearning.make_trajectory_figure(
            files["unlearn"], originals, METHODS, p, q
        ),
        "cycles": lambda p, q: figures_unlearning.make_cycles_figure(
            originals + files["cycles"], METHODS, p, q
        ),
        "weights": lambda p, q: figures_unlearning.make_weight_change_figure(
            [u for u in files["unlearn"] if "seed~0" in str(u)], METHODS, p, q
        ),
        "privacy_utility": lambda p, q: figures_studies.make_privacy_utility_figure(
            dp_and_more + unlearned, METHODS, p, q
        ),
        "onion": lambda p, q: figures_studies.make_onion_figure(files["onion"], p, q),
        "scaling": lambda p, q: figures_studies.make_scaling_figure(scaling, p, q),
    }
    for name, job in jobs.items():
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        job(png, pdf)
        _assert_figure(png, pdf)
        first = (png.read_bytes(), pdf.read_bytes())
        job(png, pdf)
        assert (png.read_bytes(), pdf.read_bytes()) == first, f"{name} is not deterministic"


def test_onion_loader_drops_removed_canaries(study):
    _, files = study
    onion = loaders.load_onion(files["onion"])
    assert set(onion["canary_id"]) == {0, 1, 2, 3}
    by = onion.groupby("selection")["change"].mean()
    assert by["targeted"] == pytest.approx(1.5) and by["random"] == pytest.approx(0.1)


def test_model_names_parse():
    assert loaders.parse_model("dp_eps~0.5")["epsilon"] == 0.5
    assert loaders.parse_model("cycle~3~fisher_forgetting")["cycle"] == 3
    with pytest.raises(ValueError, match="model name"):
        loaders.parse_model("mystery")


def test_cost_inputs_cover_every_benchmarked_job():
    class Rule:
        def __init__(self, name, benchmark):
            self.name, self.benchmark = name, benchmark

    rules = [
        Rule("prepare_corpus", "results/benchmarks/prepare_corpus/{dataset}.tsv"),
        Rule("unlearn", "results/benchmarks/unlearn/{dataset}/seed~{seed}/{method}.tsv"),
        Rule("pretrain_base", "results/benchmarks/pretrain_base.tsv"),
        Rule("tabulate_cost", None),
        Rule("plot_onion_effect", "results/benchmarks/plot_onion_effect.tsv"),
    ]
    values = {"seed": [0, 1], "method": METHODS, "dataset": ["news"]}
    prepare = {**values, "dataset": ["news", "usenet"]}
    files = paths.stage_benchmarks(
        rules, lambda rule: prepare if rule == "prepare_corpus" else values
    )
    assert files[:2] == [
        "results/benchmarks/prepare_corpus/news.tsv",
        "results/benchmarks/prepare_corpus/usenet.tsv",
    ]
    assert len([f for f in files if "/unlearn/" in f]) == 2 * len(METHODS)
    assert "results/benchmarks/pretrain_base.tsv" in files
    assert not any("plot_" in f for f in files)
    with pytest.raises(ValueError, match=r"rule odd.*COST_WILDCARDS"):
        paths.stage_benchmarks([Rule("odd", "b/{mystery}.tsv")], lambda r: values)
