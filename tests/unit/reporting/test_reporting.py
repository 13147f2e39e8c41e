"""Loaders, the DP-SGD, cost and real-world tables, masking, the figures and the cost inputs,
from synthetic files with known numbers (the main results and the claims: test_protocol_tables,
the frontier files: test_frontiers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from synthetic_study import (
    ATTACKS,
    CANARIES,
    CEILING,
    DATASETS,
    EPSILONS,
    GRID,
    MEAN_SPREAD,
    METHODS,
    ONION_SHIFT,
    ROLES,
    SEEDS,
    SPREAD,
    K,
    canary_exposures,
    metrics,
    point_removed,
    value,
)
from unlearnbench.reporting import (
    figures_frontier,
    figures_studies,
    figures_unlearning,
    frontiers,
    loaders,
    paths,
    study_claims,
    tables,
)
from unlearnbench.reporting.render import Table, write_table


def outputs(root: Path, stem: str) -> dict[str, str]:
    return {ext: str(root / f"results/tables/{stem}.{ext}") for ext in ("csv", "md", "tex", "html")}


# ---- loaders --------------------------------------------------------------------------------


def test_model_metrics_flattens_one_scored_model():
    out = loaders.model_metrics(metrics("news", 1, "original"))
    expected_columns = {
        *(f"{split}_ppl" for split in ("test", "validation", "retain_sample", "forget")),
        "kl_test",
        "kl_retain_sample",
        *(f"exposure_{role}_{stat}" for role in ROLES for stat in ("mean", "max")),
        *(f"extraction_{role}" for role in ROLES),
        *(f"mia_{attack}" for attack in ATTACKS),
        "ks_p_value",
        "over_unlearning",
    }
    assert set(out) == expected_columns

    def v(what: str) -> float:
        return value("news", 1, "original", what)

    for split in ("test", "validation", "retain_sample", "forget"):
        assert out[f"{split}_ppl"] == pytest.approx(v(f"{split}_ppl"))
    assert out["kl_test"] == pytest.approx(v("kl_test"))
    assert out["kl_retain_sample"] == pytest.approx(v("kl_retain_sample"))
    for role in ROLES:
        base = value("news", 1, "original", role)
        assert out[f"exposure_{role}_mean"] == pytest.approx(base + MEAN_SPREAD)
        assert out[f"exposure_{role}_max"] == pytest.approx(base + max(SPREAD))
    # Only the original's second removed canary is extracted.
    assert out["extraction_removed"] == pytest.approx(0.5)
    assert out["extraction_tuning"] == out["extraction_control"] == 0.0
    for i, attack in enumerate(ATTACKS):
        assert out[f"mia_{attack}"] == pytest.approx(v("mia") + 0.01 * i)
    assert out["ks_p_value"] == pytest.approx(v("ks"))
    assert out["over_unlearning"] == 0.0
    assert loaders.model_metrics(metrics("news", 1, "x", over=True))["over_unlearning"] == 1.0
    # What a model's metrics lack is NaN, not an error.
    sparse = loaders.model_metrics({"perplexity": {"test": {"perplexity": 5.0, "kl": None}}})
    assert sparse["test_ppl"] == 5.0
    absent = ["validation_ppl", "kl_test", "exposure_removed_mean", "extraction_phantom"]
    for column in [*absent, "mia_loss", "ks_p_value"]:
        assert math.isnan(sparse[column]), column


def test_load_evaluations_adds_the_model_metrics(study):
    evals = loaders.load_evaluations(study.references + study.dp)
    assert len(evals) == len(DATASETS) * len(SEEDS) * (3 + len(EPSILONS))
    row = evals[(evals["dataset"] == "wiki") & (evals["seed"] == 2)].set_index("model")
    twin = row.loc["retrained_reorder"]
    assert twin["family"] == "retrained_reorder"
    assert twin["exposure_removed_mean"] == pytest.approx(
        value("wiki", 2, "retrained_reorder", "removed") + MEAN_SPREAD
    )
    assert twin["exposure_phantom_max"] == pytest.approx(
        value("wiki", 2, "retrained_reorder", "phantom") + max(SPREAD)
    )
    assert twin["kl_test"] == pytest.approx(value("wiki", 2, "retrained_reorder", "kl_test"))
    assert twin["test_ppl"] == pytest.approx(value("wiki", 2, "retrained_reorder", "test_ppl"))
    assert twin["ceiling_bits"] == pytest.approx(CEILING)
    assert twin["estimator"] == "exact"
    # The forget set = removed and tuning canaries (the older summary columns stay).
    forget = np.mean([value("wiki", 2, "retrained_reorder", r) + MEAN_SPREAD
                      for r in ("removed", "tuning")])  # fmt: skip
    assert twin["exposure_forget_mean"] == pytest.approx(forget)
    assert row.loc["dp_eps~8", "epsilon"] == 8.0 and row.loc["dp_eps~8", "family"] == "dp"
    assert (evals["commit"] == "abc123def4567890").all()


def test_load_canaries_has_roles(study, tmp_path):
    canaries = loaders.load_canaries(study.only(study.references, dataset="news", seed=1))
    assert len(canaries) == 3 * len(CANARIES)
    original = canaries[canaries["model"] == "original"].set_index("canary_id")
    assert original["role"].to_dict() == {cid: role for cid, role, _, _ in CANARIES}
    assert original["exposure"].to_dict() == pytest.approx(canary_exposures("news", 1, "original"))
    assert original.loc[6, "repetitions"] == 0 and not original.loc[6, "in_forget_set"]
    # Records written before canaries had roles: forget -> removed, else control.
    doc = json.loads(study.references[0].read_text())
    for record in doc["canaries"]:
        del record["role"]
    legacy = tmp_path / "results/eval/news/seed~0/original.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(doc))
    roles = loaders.load_canaries([legacy]).set_index("canary_id")["role"]
    assert list(roles) == ["removed"] * 4 + ["control"] * 4


def test_model_names_parse():
    assert loaders.parse_model("dp_eps~0.5")["epsilon"] == 0.5
    assert loaders.parse_model("cycle~3~fisher_forgetting")["cycle"] == 3
    assert loaders.parse_model("retrained_reorder")["family"] == "retrained_reorder"
    assert loaders.parse_model("unlearned~npo")["method"] == "npo"
    for bad in ("mystery", "retrained_twice", "dp_eps~"):
        with pytest.raises(ValueError, match="model name"):
            loaders.parse_model(bad)


def test_onion_shifts_per_arm_and_half(study):
    """Each arm's measured siblings shifted by the arm's shift for their half (synthetic
    study: ONION_SHIFT), maskers never measured."""
    files = study_claims.StudyFiles(evaluations=study.onion, onion_canaries=study.onion_canaries)
    shifts = study_claims.onion_sibling_shifts(files)
    assert set(shifts["canary_id"]) == {4, 5, 6, 7}
    assert set(shifts["arm"]) == set(ONION_SHIFT) - {"original"}
    means = shifts.groupby(["arm", "treated"])["change"].mean()
    for arm, (treated, control) in ONION_SHIFT.items():
        if arm != "original":
            assert means[(arm, True)] == pytest.approx(treated)
            assert means[(arm, False)] == pytest.approx(control)


# ---- tables ---------------------------------------------------------------------------------


def test_dp_table_without_dp_models_shows_the_references(study, tmp_path):
    """train_dp.epsilons empty (the paper smoke on OPT): the table has the references only."""
    table = tables.make_dp_table(study.references, [], METHODS, outputs(tmp_path, "dp"), [2])
    assert len(table.data) == len(DATASETS) * 3
    assert set(table.data["model"]) == {"original", "retrained", "retrained_reorder"}
    assert table.data["epsilon_spent_mean"].isna().all()


def test_dp_table_epsilons_beside_the_references(study, tmp_path):
    table = tables.make_dp_table(
        study.references + study.dp, study.dp_train, METHODS, outputs(tmp_path, "dp"), [2, 16]
    )
    data = table.data
    # Group privacy of a canary inserted r times: r x the spent epsilon (7.84 at target 8).
    group = table.display.set_index(["dataset", "model"])["group ε (canary inserted r times)"]
    assert group[("news", "DP-SGD ε=8")] == "r=2: 15.7, r=16: 125.4"
    assert group[("news", "original")] == "–"
    assert len(data) == len(DATASETS) * (3 + len(EPSILONS))
    # References first, DP rows sorted by epsilon.
    assert list(data.loc[data["dataset"] == "news", "model"]) == [
        "original", "retrained", "retrained_reorder", "dp_eps~1", "dp_eps~8",
    ]  # fmt: skip
    assert list(table.display.loc[table.display["dataset"] == "news", "model"])[-1] == "DP-SGD ε=8"
    by = data.set_index(["dataset", "model"])
    assert by.loc[("news", "dp_eps~8"), "family"] == "dp"
    assert by.loc[("news", "dp_eps~8"), "target_epsilon_mean"] == pytest.approx(8.0)
    assert by.loc[("news", "dp_eps~8"), "epsilon_spent_mean"] == pytest.approx(7.84)
    assert math.isnan(by.loc[("news", "original"), "target_epsilon_mean"])
    orig = [value("news", s, "original", "test_ppl") for s in SEEDS]
    dp8 = [value("news", s, "dp_eps~8", "test_ppl") for s in SEEDS]
    change = [100 * (b / a - 1) for a, b in zip(orig, dp8, strict=True)]
    assert by.loc[("news", "dp_eps~8"), "ppl_change_pct_mean"] == pytest.approx(np.mean(change))
    removed = [value("wiki", s, "dp_eps~1", "removed") + MEAN_SPREAD for s in SEEDS]
    assert by.loc[("wiki", "dp_eps~1"), "exposure_removed_mean_mean"] == pytest.approx(
        np.mean(removed)
    )
    assert by.loc[("wiki", "dp_eps~1"), "exposure_removed_mean_std"] == pytest.approx(
        np.std(removed, ddof=1)
    )
    control = [value("wiki", s, "dp_eps~1", "control") + MEAN_SPREAD for s in SEEDS]
    assert by.loc[("wiki", "dp_eps~1"), "exposure_control_mean_mean"] == pytest.approx(
        np.mean(control)
    )
    kl = [value("wiki", s, "retrained_reorder", "kl_test") for s in SEEDS]
    assert by.loc[("wiki", "retrained_reorder"), "kl_test_mean"] == pytest.approx(np.mean(kl))
    md = Path(outputs(tmp_path, "dp")["md"]).read_text()
    assert f"{np.mean(removed):.2f} ± {np.std(removed, ddof=1):.2f}" in md


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


def test_an_over_unlearned_string_is_flagged_and_not_removed(tmp_path):
    columns = ["masked", "kind", "occurrences", "exposure", "extracted", "excess", "memorised"]
    rows = {
        "original": [[MASKS[0], "email", 4, 1.0, False, 9.0, True]],
        # pushed far below the held-out strings: the stage flags it and does not remove it
        "gradient_ascent": [[MASKS[0], "email", 4, 1.0, False, -80.0, True, False, True]],
    }
    paths = []
    for model, data in rows.items():
        path = tmp_path / f"results/realworld/usenet/seed~0/secrets_{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = ["removed", "over_unlearned"] if model != "original" else []
        pd.DataFrame(data, columns=columns + extra).to_csv(path, index=False)
        paths.append(path)
    table = tables.make_realworld_table(
        paths, 2.0, ["gradient_ascent"], 50, outputs(tmp_path, "rw")
    )
    assert list(table.data["over_gradient_ascent"]) == [True]
    assert list(table.data["indelible"]) == [True]  # over-unlearning is not removal
    assert "over-unlearned" in (tmp_path / "results/tables/rw.md").read_text()


def _scored_strings_table(tmp_path, scores):
    """The real-world table of credits/0 from the stages' scored-string files: ``scores`` maps a
    model to the excess of MASKS[0..]; every string memorised, the first two requested."""
    columns = ["masked", "kind", "occurrences", "exposure", "extracted", "excess", "memorised"]
    columns += ["in_forget_set", "removed", "over_unlearned"]
    paths = []
    for model, excess in scores.items():
        path = tmp_path / f"results/realworld/credits/seed~0/secrets_{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            [MASKS[i], "email", 3, 1.0, False, e, True, i < 2, False, False]
            for i, e in enumerate(excess)
        ]
        pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
        paths.append(path)
    methods = ["fisher_removal", "gradient_ascent"]
    table = tables.make_realworld_table(paths, 2.0, methods, 50, outputs(tmp_path, "rw"), 1.0)
    return table


def test_indelible_means_above_the_retrained_model_for_every_method(tmp_path):
    """With the retrained model scored, a requested string is indelible when every method
    leaves it more than indelible_margin bits above the retrained model's score; a string
    that stays in D+ never is (the retrained model learns it too)."""
    scores = {  # excess of MASKS[0..2]; MASKS[2] was not requested
        "original": [9.0, 8.0, 7.0],
        "retrained": [2.0, 1.5, 7.0],
        "fisher_removal": [5.0, 2.0, 7.0],
        "gradient_ascent": [3.5, 2.2, 6.5],
    }
    table = _scored_strings_table(tmp_path, scores)
    data = table.data.set_index("masked")
    assert list(data.loc[list(MASKS[:3]), "score_retrained"]) == [2.0, 1.5, 7.0]
    # MASKS[0]: 3.0 and 1.5 bits above retraining -> indelible; MASKS[1]: 0.5 / 0.7 -> not;
    # MASKS[2]: not requested -> never.
    assert list(data.loc[list(MASKS[:3]), "indelible"]) == [True, False, False]
    assert "retrained (bits over held-out)" in table.display.columns
    assert (
        "1 indelible (requested, and every method leaves it more than 1 bits"
        in (tmp_path / "results/tables/rw.md").read_text()
    )


def test_the_retrained_twin_raises_the_indelible_margin_to_its_noise_floor(tmp_path):
    """With the retrained model's twin scored, a string must sit more than the larger of
    indelible_margin and the noise floor (the largest retrained-vs-twin gap on the corpus's
    memorised strings) above the retrained model to be indelible."""
    scores = {  # MASKS[0] sits 3.0 and 1.5 bits above retraining; MASKS[2] not requested
        "original": [9.0, 8.0, 7.0],
        "retrained": [2.0, 1.5, 7.0],
        "retrained_reorder": [2.5, 1.0, 8.8],  # gaps 0.5, 0.5, 1.8: the floor is 1.8
        "fisher_removal": [5.0, 2.0, 7.0],
        "gradient_ascent": [3.5, 2.2, 6.5],
    }
    table = _scored_strings_table(tmp_path, scores)
    data = table.data.set_index("masked")
    assert list(data.loc[list(MASKS[:3]), "score_twin"]) == [2.5, 1.0, 8.8]
    # Gradient ascent leaves MASKS[0] 1.5 bits above: beyond 1 bit, within the 1.8-bit floor.
    assert list(data.loc[list(MASKS[:3]), "indelible"]) == [False, False, False]
    assert "retrained twin (bits over held-out)" in table.display.columns
    assert "noise floor" in (tmp_path / "results/tables/rw.md").read_text()
    assert "credits 1.80" in (tmp_path / "results/tables/rw.md").read_text()


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


# ---- figures --------------------------------------------------------------------------------


def _assert_figure(png: Path, pdf: Path):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def _scaling_csv(root: Path) -> Path:
    scaling = root / "results/scaling/fisher_scaling.csv"
    scaling.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [
            {"model_label": label, "d": d, "m": m, "gradient_s": m * d * 1e-6,
             "setup_s": m * m * d * 1e-9, "ihvp_s": 0.01, "peak_memory_mb": m * d * 4e-6}
            for label, d in (("gpt2-tiny", 10**5), ("gpt2-small", 10**6))
            for m in (16, 64, 256)
        ]
    ).to_csv(scaling, index=False)  # fmt: skip
    return scaling


def _secrets_files(root):
    """The case study's scored tables: 3 memorised strings (2 requested) under the original,
    the retrained model and two methods."""
    columns = ["masked", "kind", "occurrences", "exposure", "extracted", "excess", "memorised"]
    columns += ["in_forget_set", "removed", "over_unlearned"]
    scores = {
        "original": [9.0, 8.0, 7.0],
        "retrained": [2.0, 1.5, 7.0],
        "unlearned~fisher_removal": [5.0, 2.0, 7.0],
        "unlearned~gradient_ascent": [-3.0, 0.5, 6.5],
    }
    paths = []
    for model, excess in scores.items():
        path = root / f"results/realworld/credits/seed~0/secrets_{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            [MASKS[i], "email", 3, 1.0, False, e, True, i < 2, e < 1, False]
            for i, e in enumerate(excess)
        ]
        pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
        paths.append(path)
    return paths


FIGURES = {
    "privacy_utility": lambda study, root, png, pdf: figures_frontier.make_privacy_utility_figure(
        study.references + study.dp, study.frontiers, METHODS, png, pdf
    ),
    "weight_changes": lambda study, root, png, pdf: figures_unlearning.make_weight_change_figure(
        study.only(study.frontiers, seed=0), METHODS, png, pdf
    ),
    "unlearning_cycles": lambda study, root, png, pdf: figures_unlearning.make_cycles_figure(
        [p for p in study.references if p.name in ("original.json", "retrained.json")]
        + study.cycle_retrains
        + study.cycles,
        METHODS,
        png,
        pdf,
    ),
    "onion_effect": lambda study, root, png, pdf: figures_studies.make_onion_figure(
        study.onion, study.onion_canaries, png, pdf
    ),
    "fisher_scaling": lambda study, root, png, pdf: figures_studies.make_scaling_figure(
        _scaling_csv(root), png, pdf
    ),
    "realworld_memorisation": lambda study, root, png, pdf: figures_studies.make_realworld_figure(
        _secrets_files(root), METHODS, 4.0, 1.0, png, pdf
    ),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_written_and_deterministic(study, tmp_path, name):
    png, pdf = tmp_path / f"figures/{name}.png", tmp_path / f"figures/{name}.pdf"
    FIGURES[name](study, tmp_path, png, pdf)
    _assert_figure(png, pdf)
    first = (png.read_bytes(), pdf.read_bytes())
    FIGURES[name](study, tmp_path, png, pdf)
    assert (png.read_bytes(), pdf.read_bytes()) == first, f"{name} is not deterministic"


def test_privacy_utility_figure_draws_each_frontier(study):
    points, selected = frontiers.load_frontiers(study.frontiers)
    evals = loaders.load_evaluations(study.references + study.dp)
    fig = figures_frontier.privacy_utility_figure(evals, points, selected, METHODS)
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == DATASETS
        ax = axes[DATASETS.index("news")]
        lines = {line.get_label(): line for line in ax.get_lines()}
        # Fisher Removal: its 3 scored points (the diverged one is left out), weakest first;
        # x = test perplexity / the same replicate's original's, y = removed exposure, both the
        # mean over replicates.
        fr = lines["Fisher Removal"]
        assert list(fr.get_xdata()) == pytest.approx([1.01, 1.02, 1.04])
        assert list(fr.get_ydata()) == pytest.approx(
            [np.mean([point_removed("news", s, "fisher_removal", i) + MEAN_SPREAD for s in SEEDS])
             for i in range(3)]
        )  # fmt: skip
        # Gradient ascent: sorted by strength, not by its order in the file.
        ga = lines["gradient ascent"]
        order = sorted(range(3), key=lambda i: GRID["gradient_ascent"][i][1])
        assert order == [1, 0, 2]
        assert list(ga.get_xdata()) == pytest.approx([GRID["gradient_ascent"][i][3] for i in order])
        # The ceiling of the exposure scale.
        ceiling = [line for label, line in lines.items() if label.startswith("ceiling")]
        assert list(ceiling[0].get_ydata()) == pytest.approx([CEILING, CEILING])
    finally:
        plt.close(fig)


def _cycle_figure(study):
    evaluations = [p for p in study.references if p.name == "original.json"] + study.cycles
    return figures_unlearning.cycles_figure(
        loaders.load_canaries(evaluations), loaders.load_evaluations(evaluations), METHODS
    )


def _cycle_mean(dataset: str, method: str, k: int, keep) -> float:
    model = "original" if k == 0 else f"cycle~{k}~{method}"
    return np.mean(
        [
            canary_exposures(dataset, s, model)[cid]
            for s in SEEDS
            for cid, role, group, _ in CANARIES
            if keep(role, group, k)
        ]
    )


def test_cycles_figure_shows_the_canaries_removed_so_far(study):
    fig = _cycle_figure(study)
    try:
        col = DATASETS.index("wiki")
        for i, method in enumerate(METHODS):
            line = _axes(fig, 1, col).get_lines()[i]
            assert list(line.get_xdata()) == list(range(1, K + 1))
            expected = [
                _cycle_mean("wiki", method, k, lambda role, group, k: 1 <= group <= k)
                for k in range(1, K + 1)
            ]
            assert list(line.get_ydata()) == pytest.approx(expected)
        # The original model's forget canaries (removed and tuning), for comparison.
        before = _axes(fig, 1, col).get_lines()[len(METHODS)]
        assert before.get_label() == "original model, all forget canaries"
        assert before.get_ydata()[0] == pytest.approx(
            _cycle_mean("wiki", METHODS[0], 0, lambda role, group, k: group >= 1)
        )
    finally:
        plt.close(fig)


def test_cycles_figure_controls_are_the_control_canaries(study):
    fig = _cycle_figure(study)
    try:
        col = DATASETS.index("news")
        for i, method in enumerate(METHODS):
            line = _axes(fig, 2, col).get_lines()[i]
            assert list(line.get_xdata()) == list(range(0, K + 1))
            expected = [
                _cycle_mean("news", method, k, lambda role, group, k: role == "control")
                for k in range(0, K + 1)
            ]
            assert list(line.get_ydata()) == pytest.approx(expected)
    finally:
        plt.close(fig)


def _axes(fig, row: int, col: int):
    """The axes at (row, col) of a figure made by plotting.subplots."""
    ncols = len(DATASETS)
    return fig.axes[row * ncols + col]


# ---- paths ----------------------------------------------------------------------------------


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


def test_the_noise_free_dp_control_is_named_and_ordered_last():
    assert tables.model_label("dp_eps~inf") == "DP-SGD recipe, no noise (ε=∞)"
    order = tables.model_order(["dp_eps~inf", "dp_eps~8", "original", "dp_eps~1"])
    assert order == ["original", "dp_eps~1", "dp_eps~8", "dp_eps~inf"]
    from unlearnbench.reporting.render import fmt, latex_escape

    assert fmt(float("inf"), 1) == "∞" and latex_escape("ε=∞") == r"$\varepsilon$=$\infty$"
