"""The side studies' claim measurements (reporting.study_claims), on small files written here:
each contrast is checked against a value computed by hand from the same numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from unlearnbench.reporting import study_claims
from unlearnbench.reporting.protocol_tables import claims_table
from unlearnbench.reporting.study_claims import StudyFiles, study_claim_data

BOOTSTRAP = {"resamples": 500, "level": 0.95, "alpha": 0.05, "seed": 0}


def write_eval(root, dataset, seed, model, test_ppl, canaries):
    """A results/eval/{dataset}/seed~{seed}/{model}.json with what the loaders read."""
    path = root / "eval" / dataset / f"seed~{seed}" / f"{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "canary_id": cid,
            "group": group,
            "in_forget_set": role == "removed",
            "role": role,
            "repetitions": 4,
            "space_size": 10000,
            "exposure_exact": exposure,
            "secret_log_perplexity": 20.0 - exposure,
            "extracted": False,
        }
        for cid, (role, group, exposure) in canaries.items()
    ]
    doc = {
        "dataset": dataset,
        "seed": seed,
        "model_name": model,
        "summary": {},
        "perplexity": {
            "test": {"perplexity": test_ppl},
            "retain_sample": {"perplexity": test_ppl},
            "forget": {"perplexity": test_ppl},
        },
        "canaries": records,
    }
    path.write_text(json.dumps(doc))
    return path


def flat(exposures, role="control"):
    return {cid: (role, 0, e) for cid, e in exposures.items()}


def rule(**fields):
    return {"id": "x", "claim": "x", "direction": "above", "threshold": 0.0, **fields}


def test_models_contrast_is_the_log_perplexity_ratio(tmp_path):
    paths = [
        write_eval(tmp_path, ds, 0, model, ppl, flat({0: 1.0}))
        for ds, model, ppl in [
            ("news", "dp_eps~8", 300.0),
            ("news", "retrained", 150.0),
            ("docs", "dp_eps~8", 90.0),
            ("docs", "retrained", 100.0),
        ]
    ]
    data = study_claim_data(
        rule(study="models", metric="test_log_perplexity", a="dp_eps~8", b="retrained"),
        StudyFiles(evaluations=paths),
    )
    got = dict(zip(data["seed"], data["value"], strict=True))
    assert got == pytest.approx({"news/0": math.log(2.0), "docs/0": math.log(0.9)})


def test_cycles_gap_sums_each_request_against_its_own_retrained_model(tmp_path):
    ppl = {
        "retrained_request~1": 100.0,
        "retrained": 110.0,
        "cycle~1~fisher_forgetting": 105.0,
        "cycle~2~fisher_forgetting": 121.0,
        "cycle~1~fisher_removal": 120.0,
        "cycle~2~fisher_removal": 132.0,
    }
    paths = [write_eval(tmp_path, "news", 0, m, p, flat({0: 1.0})) for m, p in ppl.items()]
    files = StudyFiles(evaluations=paths)
    gaps = study_claims.cumulative_utility_gaps(files.table("evals")).set_index("method")["gap"]
    # Request 1 against retrained_request~1, request 2 (the last) against retrained.
    ff = math.log(105 / 100) + math.log(121 / 110)
    fr = math.log(120 / 100) + math.log(132 / 110)
    assert gaps.to_dict() == pytest.approx({"fisher_forgetting": ff, "fisher_removal": fr})
    data = study_claim_data(
        rule(
            study="cycles",
            metric="cumulative_utility_gap",
            a="fisher_forgetting",
            b="fisher_removal",
        ),
        files,
    )
    assert data["value"].tolist() == pytest.approx([ff - fr])


def test_cycles_without_a_request_gold_standard_give_no_measurement(tmp_path):
    paths = [
        write_eval(tmp_path, "news", 0, m, 100.0, flat({0: 1.0}))
        for m in ["retrained", "cycle~1~fisher_removal", "cycle~2~fisher_removal"]
    ]
    gaps = study_claims.cumulative_utility_gaps(StudyFiles(evaluations=paths).table("evals"))
    assert gaps.empty  # request 1 has no retrained_request~1: the sum would omit it


def _scores(arm, values):
    return [
        {"arm": arm, "canary_id": cid, "exposure": e, "log_perplexity": -e}
        for cid, e in values.items()
    ]


def test_within_run_contrast_by_hand():
    """Two templates per half, one measured sibling each: template 0 and 2 treated."""
    canaries = pd.DataFrame(
        {
            "canary_id": [0, 1, 2, 3, 4, 5, 6, 7],
            "template_index": [0, 1, 2, 3, 0, 1, 2, 3],
            "sibling": [0, 0, 0, 0, 1, 1, 1, 1],
            "treated": [True, False, True, False, True, False, True, False],
        }
    )
    original = {4: 1.0, 5: 2.0, 6: 3.0, 7: 4.0}
    masked = {4: 3.0, 5: 2.5, 6: 4.0, 7: 4.0}  # treated +2, +1; control +0.5, 0
    scores = pd.DataFrame(_scores("original", original) + _scores("masked", masked))
    shifts = study_claims.sibling_shifts(canaries, scores)
    assert set(shifts["canary_id"]) == {4, 5, 6, 7}  # maskers are not measured
    assert shifts.set_index("canary_id")["change"].to_dict() == {4: 2.0, 5: 0.5, 6: 1.0, 7: 0.0}
    contrast = study_claims.masking_contrasts(shifts, "change")
    # pair 0: template 0 vs 1 (2.0 - 0.5); pair 1: template 2 vs 3 (1.0 - 0.0)
    assert contrast.set_index("unit")["value"].to_dict() == {
        "pair0/sibling1": 1.5,
        "pair1/sibling1": 1.0,
    }
    assert contrast["value"].mean() == pytest.approx(np.mean([2.0, 1.0]) - np.mean([0.5, 0.0]))
    logppl = study_claims.masking_contrasts(shifts, "log_perplexity_change")
    assert logppl["value"].tolist() == [-1.5, -1.0]


def onion_files(tmp_path):
    """Templates 0-3, maskers 0-3 (sibling 0), measured siblings 4-7 (sibling 1); templates 0
    and 2 treated. Exposures per arm (maskers left at 9 everywhere)."""
    table = pd.DataFrame(
        {
            "canary_id": range(8),
            "template": "code is {secret}",
            "prefix": "code is ",
            "secret": [f"{1000 + i}" for i in range(8)],
            "text": [f"code is {1000 + i}" for i in range(8)],
            "repetitions": [8] * 4 + [4] * 4,
            "group": [1, 0, 1, 0, 0, 0, 0, 0],
            "in_forget_set": [True, False, True, False] + [False] * 4,
            "randomness_space": 10000,
            "role": ["removed", "control", "removed", "control"] + ["control"] * 4,
            "template_index": [0, 1, 2, 3] * 2,
            "sibling": [0] * 4 + [1] * 4,
            "treated": [True, False, True, False] * 2,
        }
    )
    canaries = tmp_path / "onion" / "news" / "seed~0" / "data" / "canaries.csv"
    canaries.parent.mkdir(parents=True)
    table.to_csv(canaries, index=False)
    siblings = {
        "original": {4: 2.0, 5: 3.0, 6: 4.0, 7: 5.0},
        "masked": {4: 4.0, 5: 3.5, 6: 5.0, 7: 5.0},
        "reorder": {4: 2.5, 5: 3.0, 6: 4.0, 7: 5.5},
        "random": {4: 2.0, 5: 3.0, 6: 4.5, 7: 5.0},
    }
    evals = [
        write_eval(tmp_path, "news", 0, f"onion~{arm}", 100.0, flat({0: 9.0, 1: 9.0} | values))
        for arm, values in siblings.items()
    ]
    return StudyFiles(evaluations=evals, onion_canaries=[canaries]), siblings


def test_onion_masking_contrast_pairs_treated_and_control_templates(tmp_path):
    files, e = onion_files(tmp_path)
    shift = {arm: {c: e[arm][c] - e["original"][c] for c in e[arm]} for arm in e}

    def contrast(arm):  # pair 0: template 0 vs 1 (ids 4, 5); pair 1: template 2 vs 3 (6, 7)
        return {
            "pair0/sibling1": shift[arm][4] - shift[arm][5],
            "pair1/sibling1": shift[arm][6] - shift[arm][7],
        }

    data = study_claim_data(
        rule(study="onion", metric="masking_exposure_contrast", a="masked", b="reorder"), files
    )
    expected = {u: contrast("masked")[u] - contrast("reorder")[u] for u in contrast("masked")}
    assert dict(zip(data["unit"], data["value"], strict=True)) == pytest.approx(expected)
    # Against the study's original model, every shift is 0: a - b is arm a's contrast.
    data = study_claim_data(
        rule(study="onion", metric="masking_exposure_contrast", a="masked", b="original"), files
    )
    assert dict(zip(data["unit"], data["value"], strict=True)) == pytest.approx(contrast("masked"))
    logppl = study_claim_data(
        rule(study="onion", metric="masking_log_perplexity_contrast", a="masked", b="original"),
        files,
    )
    # secret_log_perplexity = 20 - exposure in these files: the contrast is the negative.
    assert logppl["value"].tolist() == pytest.approx([-v for v in data["value"]])


def test_onion_sibling_shift_pairs_treated_siblings_by_canary(tmp_path):
    files, e = onion_files(tmp_path)
    data = study_claim_data(
        rule(study="onion", metric="sibling_exposure_shift", a="masked", b="random"), files
    )
    expected = {
        str(c): (e["masked"][c] - e["original"][c]) - (e["random"][c] - e["original"][c])
        for c in (4, 6)  # the treated templates' measured siblings only
    }
    assert dict(zip(data["unit"], data["value"], strict=True)) == pytest.approx(expected)


def test_realworld_contrast_pairs_requested_strings_and_pools_units(tmp_path):
    folder = tmp_path / "realworld" / "credits" / "seed~0"
    folder.mkdir(parents=True)
    masks = ["a***@***.org#0000000a", "b***@***.org#0000000b", "c***@***.org#0000000c"]
    for model, excess in [
        ("unlearned~fisher_removal", [5.0, 1.0, 9.0]),
        ("retrained", [0.5, 1.5, 9.0]),
    ]:
        pd.DataFrame(
            {
                "masked": masks,
                "kind": "email",
                "occurrences": 2,
                "exposure": 1.0,
                "extracted": False,
                "excess": excess,
                "in_forget_set": [True, True, False],
            }
        ).to_csv(folder / f"secrets_{model}.csv", index=False)
    files = StudyFiles(secrets=sorted(folder.glob("secrets_*.csv")))
    spec = rule(
        study="realworld",
        metric="requested_excess",
        a="unlearned~fisher_removal",
        b="retrained",
        resample="units",
    )
    data = study_claim_data(spec, files)
    assert set(data["seed"]) == {"pooled"}  # one replicate: its strings are the units
    assert dict(zip(data["unit"], data["value"], strict=True)) == pytest.approx(
        {f"credits/0/{masks[0]}": 4.5, f"credits/0/{masks[1]}": -0.5}
    )


def test_study_claims_join_the_table_and_its_holm_family(tmp_path):
    files, *_ = onion_files(tmp_path)
    onion = {
        "study": "onion",
        "metric": "masking_exposure_contrast",
        "a": "masked",
        "b": "original",
    }
    studies = [
        rule(id="onion_retrained", **onion),
        rule(id="pooled_onion", resample="units", **onion),
    ]
    _, result = claims_table(
        [], pd.DataFrame(), pd.DataFrame(), ["news"], BOOTSTRAP, studies, files
    )
    by_id = result.set_index("id")
    # One replicate: the two-level claim cannot resample seeds, the pooled one can.
    assert by_id.loc["onion_retrained", "verdict"] == "inconclusive"
    assert "1 seed" in by_id.loc["onion_retrained", "reason"]
    assert by_id.loc["pooled_onion", "units"] == 2
    # masked contrasts: (2.0 - 0.5) and (1.0 - 0.0)
    assert by_id.loc["pooled_onion", "estimate"] == pytest.approx((1.5 + 1.0) / 2)
    assert "exploratory" in by_id.loc["pooled_onion", "scope"]
