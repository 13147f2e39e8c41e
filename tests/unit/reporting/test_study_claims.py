"""The side studies' claim measurements (reporting.study_claims), on small files written here:
each contrast is checked against a value computed by hand from the same numbers."""

from __future__ import annotations

import json
import math

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


def onion_files(tmp_path):
    """Canaries 0-5; targeted S = {0}, random S = {1}; 2-5 are controls of both."""
    before = {0: 9.0, 1: 3.0, 2: 4.0, 3: 5.0, 4: 6.0, 5: 2.0}
    targeted = {1: 3.5, 2: 5.0, 3: 6.5, 4: 6.0, 5: 2.5}
    random = {0: 9.0, 2: 4.5, 3: 5.0, 4: 5.0, 5: 2.0}
    evals = [
        write_eval(tmp_path, "news", 0, "original", 100.0, flat(before)),
        write_eval(tmp_path, "news", 0, "onion~targeted", 100.0, flat(targeted)),
        write_eval(tmp_path, "news", 0, "onion~random", 100.0, flat(random)),
    ]
    requests = []
    for selection, removed in [("targeted", [0]), ("random", [1])]:
        path = tmp_path / "onion" / "news" / "seed~0" / f"request~{selection}" / "manifest.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"selection": selection, "removed_canary_ids": removed}))
        requests.append(path)
    return StudyFiles(evaluations=evals, onion_requests=requests), before, targeted, random


def test_onion_retrain_contrast_pairs_the_controls_of_both_requests(tmp_path):
    files, _, targeted, random = onion_files(tmp_path)
    shifts = study_claims.onion_retrain_shifts(files)
    assert set(shifts[shifts["selection"] == "targeted"]["canary_id"]) == {1, 2, 3, 4, 5}
    assert set(shifts[shifts["selection"] == "random"]["canary_id"]) == {0, 2, 3, 4, 5}
    data = study_claim_data(
        rule(
            study="onion",
            metric="control_exposure_shift",
            point="retrain",
            a="targeted",
            b="random",
        ),
        files,
    )
    expected = {str(c): targeted[c] - random[c] for c in (2, 3, 4, 5)}
    assert dict(zip(data["unit"], data["value"], strict=True)) == pytest.approx(expected)
    logppl = study_claim_data(
        rule(
            study="onion",
            metric="control_log_perplexity_shift",
            point="retrain",
            a="targeted",
            b="random",
        ),
        files,
    )
    # secret_log_perplexity = 20 - exposure in these files: the shift is the negative.
    assert logppl["value"].tolist() == pytest.approx([-v for v in data["value"]])


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
        "metric": "control_exposure_shift",
        "point": "retrain",
        "a": "targeted",
        "b": "random",
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
    assert by_id.loc["pooled_onion", "units"] == 4
    assert by_id.loc["pooled_onion", "estimate"] == pytest.approx((0.5 + 1.5 + 1.0 + 0.5) / 4)
    assert "exploratory" in by_id.loc["pooled_onion", "scope"]
