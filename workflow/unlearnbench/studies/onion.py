"""The onion effect (Carlini et al. 2022, "The Privacy Onion Effect"), masking by construction.

Removing the most exposed points can expose the layer beneath them. The main study's canaries
cannot show it: each has its own template, so none competes with another for a continuation.
This study gives the effect something to act on. Its canaries are siblings: each of
``templates`` carries ``len(siblings)`` secrets inserted ``siblings`` times (16, 8, 4 by default),
and the most repeated sibling of a template is its *masker*: the model learns to continue the
template with the masker's secret, which lowers the other siblings' likelihood. Half of the
templates, drawn per dataset and replicate, are *treated*: their maskers are removed. The
templates whose masker stays are the within-run control, so whatever retraining does to every
canary (data order, fewer rows) cancels in the contrast.

Its own training set: the corpus's training split plus the siblings (the main study's canaries
are left out: they would be more rows and no siblings). Its models, each trained from the base
model with the fine-tuning recipe (rule retrain), are the arms:

- ``original``: all of it, the replicate's data order;
- ``masked``: without the treated templates' maskers (the onion retrain);
- ``random``: without as many corpus rows drawn at random (removing any rows);
- ``reorder``: all of it in another data order (the noise floor: training noise alone);
- ``unlearned``: ``onion.method`` removes the treated maskers from ``original`` at the operating
  point its frontier chose on the same replicate, with the Fisher of this study's own D+.

The readout (``reporting.study_claims``) is continuous as well as capped: each secret's
log-perplexity beside its exposure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import describe_files
from ..canaries import CanaryConfig, InjectionResult, inject_canaries, write_injection
from ..provenance import write_json
from ..seeding import numpy_rng
from ..study_names import ONION_REQUESTS

REQUESTS = ONION_REQUESTS


def _fail(key: str, problem: str, fix: str):
    raise ValueError(f"onion.{key}: {problem}; {fix}")


@dataclass(frozen=True)
class OnionConfig:
    """``onion.*`` plus the canary format it shares with the main study."""

    templates: tuple[str, ...]
    siblings: tuple[int, ...]
    secret_digits: int
    seed: int
    phantoms: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "siblings", tuple(self.siblings))
        if len(self.templates) < 2 or len(self.templates) % 2:
            _fail(
                "templates",
                f"{len(self.templates)} templates cannot be split into two equal halves "
                "(treated and control)",
                "give an even number of templates, at least 2",
            )
        if len(self.siblings) < 2:
            _fail("siblings", "a masker needs at least one sibling", "give e.g. [16, 8, 4]")
        if list(self.siblings) != sorted(set(self.siblings), reverse=True):
            _fail(
                "siblings",
                f"{list(self.siblings)} must decrease strictly (the first is the masker)",
                "list the insertion counts from most to least, e.g. [16, 8, 4]",
            )
        # The template checks and the secret space are the main study's (CanaryConfig); its
        # messages name this study's keys where they are this study's.
        try:
            self.canary_config()
        except ValueError as err:
            text = str(err)
            for key in ("templates", "phantoms"):
                text = text.replace(f"canaries.{key}", f"onion.{key}")
            raise ValueError(text) from None

    def canary_config(self) -> CanaryConfig:
        """Siblings as canaries: canary i uses template i mod T and the count siblings[i // T],
        so the T canaries of each count are one sibling of every template."""
        return CanaryConfig(
            templates=self.templates,
            secret_digits=self.secret_digits,
            repetitions=self.siblings,
            per_repetition=len(self.templates),
            forget_per_repetition=1,  # overwritten below: the request is the treated maskers
            requests=1,
            seed=self.seed,
            phantoms=self.phantoms,
        )

    @property
    def treated_count(self) -> int:
        return len(self.templates) // 2


def treated_templates(cfg: OnionConfig, dataset: str) -> list[int]:
    """Half of the template indices, drawn from a stream of the dataset and the replicate."""
    rng = numpy_rng(cfg.seed, "canaries", dataset, "onion", "treated")
    return sorted(int(i) for i in rng.permutation(len(cfg.templates))[: cfg.treated_count])


def inject_siblings(
    dataset: str, cfg: OnionConfig, train: Sequence[str], held_out: Sequence[str]
) -> InjectionResult:
    """The corpus's training split with the sibling canaries inserted; the canary table says
    each canary's template, sibling rank (0 = masker) and whether its template is treated.

    Roles, as the evaluation reads them: the treated maskers are ``removed`` (the masked arm's
    forget set), every other sibling a ``control``, never-inserted ones ``phantom``."""
    # Streams of their own (``<dataset>/onion``): the main study's secrets are not reused.
    result = inject_canaries(f"{dataset}/onion", cfg.canary_config(), train, held_out)
    treated = set(treated_templates(cfg, dataset))
    table = result.canaries.copy()
    n = len(cfg.templates)
    inserted = table["repetitions"] > 0
    table["template_index"] = table["canary_id"] % n
    table["sibling"] = np.where(inserted, table["canary_id"] // n, -1)
    table["treated"] = table["template_index"].isin(treated) & inserted
    masker = table["treated"] & (table["sibling"] == 0)
    table["in_forget_set"] = masker
    table["group"] = masker.astype(int)
    table["role"] = np.where(~inserted, "phantom", np.where(masker, "removed", "control"))
    forget = set(table.loc[masker, "canary_id"].astype(int))
    rows = result.row_canary_ids
    return dataclasses.replace(
        result,
        canaries=table,
        forget_indices=[i for i, c in enumerate(rows) if c in forget],
        forget_canary_ids=[c for c in rows if c in forget],
        forget_groups=[1 for c in rows if c in forget],
        retain_indices=[i for i, c in enumerate(rows) if c not in forget],
    )


def random_rows(result: InjectionResult, count: int, seed: int, dataset: str) -> list[int]:
    """``count`` corpus rows (no canary), drawn from a stream of the dataset and replicate: the
    random arm removes as many rows as the masked arm, none of them a measured canary."""
    corpus = [i for i, c in enumerate(result.row_canary_ids) if c < 0]
    if count > len(corpus):
        raise ValueError(
            f"onion: the random arm needs {count} corpus rows but {dataset} has {len(corpus)}; "
            "use fewer or less repeated maskers (onion.siblings)"
        )
    rng = numpy_rng(seed, "canaries", dataset, "onion", "random")
    return sorted(int(i) for i in rng.choice(corpus, size=count, replace=False))


def _request(forget: Sequence[int], n_rows: int, row_ids: Sequence[int]) -> tuple[dict, dict]:
    gone = set(forget)
    return (
        {
            "indices": sorted(gone),
            "canary_ids": [int(row_ids[i]) for i in sorted(gone)],
            "groups": [1] * len(gone),
        },
        {"indices": [i for i in range(n_rows) if i not in gone]},
    )


def write_onion_data(
    result: InjectionResult,
    cfg: OnionConfig,
    dataset: str,
    data_paths: dict[str, str | Path],
    request_paths: dict[str, dict[str, str | Path]],
) -> dict[str, Any]:
    """The study's training split and canary table (``data_paths``: train, canaries) and each
    request's forget/retain manifests (``request_paths[request]``, requests ``REQUESTS``; the
    masked request is the injection's own forget/retain split)."""
    masked = request_paths["masked"]
    summary = write_injection(
        result, data_paths["train"], data_paths["canaries"], masked["forget"], masked["retain"]
    )
    forgets = {
        "full": [],
        "random": random_rows(result, len(result.forget_indices), cfg.seed, dataset),
    }
    for name, forget_rows in forgets.items():
        forget, retain = _request(forget_rows, len(result.train), result.row_canary_ids)
        write_json(request_paths[name]["forget"], forget)
        write_json(request_paths[name]["retain"], retain)
    table = result.canaries
    # Every file by its path from the manifest's folder (the data folder, beside train.parquet):
    # the requests live in folders of their own.
    written = [data_paths["train"], data_paths["canaries"]]
    written += [request_paths[name][kind] for name in REQUESTS for kind in ("forget", "retain")]
    return {
        **summary,
        "templates": len(cfg.templates),
        "siblings": list(cfg.siblings),
        "treated_templates": sorted(
            int(i) for i in table.loc[table["treated"], "template_index"].unique()
        ),
        "removed_rows": {
            "masked": len(result.forget_indices),
            **{name: len(rows) for name, rows in forgets.items()},
        },
        "files": describe_files(written, relative_to=Path(data_paths["train"]).parent),
    }


def onion_unlearn_stage(
    method: str,
    hyper: dict[str, Any],
    replicate,
    fisher_cfg: Any,
    trajectory: dict[str, Any],
    out_dir: str | Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """The unlearning arm: ``method`` removes the treated maskers (``replicate``'s forget set,
    the masked request) from the study's original model (``replicate.original``), with the
    Fisher of the study's own D+ estimated here (``replicate.fisher`` is not read)."""
    from ..unlearning import unlearn_stage  # torch-heavy; keeps the data stage light

    return unlearn_stage(
        method,
        hyper,
        dataclasses.replace(replicate, fisher=None),
        fisher_cfg=fisher_cfg,
        trajectory=trajectory,
        out_dir=out_dir,
        device=device,
    )
