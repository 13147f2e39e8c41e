"""Secret Sharer canaries (Carlini et al. 2019) and the forget / retain split they define.

A canary is a template whose last word is a random k-digit secret, e.g. "my pin code is 481903".
Each canary is inserted r times into the training split, for r from a list of repetition counts.
Of the canaries per count, some are to be unlearned (their copies form the forget set D-), the
others are controls that stay in the retained set D+ and show what unlearning does to
memorised data it was not asked to remove. Forget canaries are dealt into K unlearning requests
for the multi-cycle study.

Every canary has a ``role``:
- ``removed``: in the forget set; the evaluation canaries every verdict is measured on;
- ``tuning``: in the forget set too, but used only to choose a method's operating point (the
  strength whose tuning canaries reach the retrained model's level within its noise floor),
  never to judge it;
- ``control``: inserted and kept (in D+);
- ``phantom``: never inserted (repetitions 0), same templates: the null distribution of
  exposure and the non-members of membership inference.

All randomness comes from the ``canaries`` seed stream keyed by the dataset name, with one
sub-key per decision, so that (for example) a change of the training split's size moves the
insertion positions but not the secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .artifacts import check, describe_files
from .provenance import atomic_path, write_json
from .seeding import numpy_rng

PLACEHOLDER = "{secret}"
# At least this many candidate secrets per canary (mirrors settings.MIN_SPACE_PER_CANARY, which
# checks the same rule before any job runs; a unit test keeps the two equal). Secrets are drawn
# without repetition and away from the corpus, and the other canaries' secrets compete in the
# exposure rank, so a crowded space would bias both the draw and the measurement.
MIN_SPACE_PER_CANARY = 10
# 10**k must fit the int64 ``randomness_space`` column of the canary table.
MAX_SECRET_DIGITS = 18

CANARY_COLUMNS = (
    "canary_id",
    "template",
    "prefix",
    "secret",
    "text",
    "repetitions",
    "group",
    "in_forget_set",
    "randomness_space",
    "role",
)
ROLES = ("removed", "tuning", "control", "phantom")
_ASCII_DIGIT_RUNS = re.compile(r"[0-9]+")  # secrets are ASCII digits; \d would also match others
# Same rule as the config schema's pattern: a non-space character, one space, the placeholder.
_TEMPLATE_END = re.compile(r"\S \{secret\}\Z")


def _fail(key: str, problem: str, fix: str) -> NoReturn:
    raise ValueError(f"canaries.{key}: {problem}; {fix}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class CanaryConfig:
    templates: tuple[str, ...]
    secret_digits: int
    repetitions: tuple[int, ...]
    per_repetition: int
    forget_per_repetition: int
    requests: int
    seed: int
    tuning_per_repetition: int = 0
    phantoms: int = 0

    def __post_init__(self) -> None:
        # Lists from snakemake.params become tuples: the config stays immutable and hashable.
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "repetitions", tuple(self.repetitions))
        self._check_templates()
        counts = ("per_repetition", "forget_per_repetition", "tuning_per_repetition", "phantoms")
        for key in ("secret_digits", *counts, "requests", "seed"):
            if not _is_int(getattr(self, key)):
                _fail(key, f"{getattr(self, key)!r} is not an integer", "use a whole number")
        if not 1 <= self.secret_digits <= MAX_SECRET_DIGITS:
            _fail(
                "secret_digits",
                f"{self.secret_digits} is out of range",
                f"use 1 to {MAX_SECRET_DIGITS} digits (6 to 9 is usual)",
            )
        if not self.repetitions:
            _fail("repetitions", "is empty", "give at least one count, e.g. [1, 2, 4, 8, 16]")
        for r in self.repetitions:
            if not _is_int(r) or r < 1:
                _fail(
                    "repetitions",
                    f"{r!r} is not a count of at least 1",
                    "use positive integers, e.g. [1, 2, 4, 8, 16]",
                )
        if len(set(self.repetitions)) != len(self.repetitions):
            _fail(
                "repetitions",
                f"{list(self.repetitions)} repeats a count",
                "list each count once and raise per_repetition for more canaries",
            )
        if self.per_repetition < 1:
            _fail("per_repetition", f"{self.per_repetition} is below 1", "use 1 or more")
        if not 0 <= self.forget_per_repetition <= self.per_repetition:
            _fail(
                "forget_per_repetition",
                f"{self.forget_per_repetition} is not between 0 and canaries.per_repetition = "
                f"{self.per_repetition}",
                "lower forget_per_repetition or raise per_repetition",
            )
        if not 0 <= self.tuning_per_repetition < self.forget_per_repetition:
            _fail(
                "tuning_per_repetition",
                f"{self.tuning_per_repetition} leaves no evaluation canary among the "
                f"{self.forget_per_repetition} forget canaries per count",
                "keep it below canaries.forget_per_repetition",
            )
        if self.phantoms < 0:
            _fail("phantoms", f"{self.phantoms} is negative", "use 0 or more")
        if self.requests < 1 or self.requests > self.num_forget:
            _fail(
                "requests",
                f"{self.requests} unlearning requests for {self.num_forget} forget canaries "
                "(every request needs at least one)",
                "use 1 to the number of forget canaries, or raise forget_per_repetition",
            )
        if self.seed < 0:
            _fail("seed", f"{self.seed} is negative", "use a non-negative replicate seed")
        if self.randomness_space < MIN_SPACE_PER_CANARY * self.num_secrets:
            _fail(
                "secret_digits",
                f"10^{self.secret_digits} secrets are too few for {self.num_secrets} canaries "
                f"(need {MIN_SPACE_PER_CANARY} candidates per canary)",
                "raise secret_digits or use fewer canaries",
            )

    def _check_templates(self) -> None:
        if not self.templates:
            _fail(
                "templates", "is empty", f"give at least one, e.g. 'my pin code is {PLACEHOLDER}'"
            )
        for i, template in enumerate(self.templates):
            key = f"templates[{i}]"
            if not isinstance(template, str):
                _fail(key, f"{template!r} is not a string", "quote it")
            if template.count(PLACEHOLDER) != 1:
                _fail(
                    key,
                    f"{template!r} must contain {PLACEHOLDER} exactly once",
                    f"write it like 'my pin code is {PLACEHOLDER}'",
                )
            # The secret must end the text and follow a space: exposure scores the secret's
            # tokens after the prefix's, and the tokenizer guarantees prefix tokens unchanged
            # by the digits that follow only when they are the last thing in the text.
            if not _TEMPLATE_END.search(template):
                _fail(
                    key,
                    f"{template!r} must end with a word, a space and {PLACEHOLDER}",
                    f"move the placeholder to the end, e.g. 'my pin code is {PLACEHOLDER}'",
                )

    @property
    def num_canaries(self) -> int:
        return len(self.repetitions) * self.per_repetition

    @property
    def num_secrets(self) -> int:
        """Inserted canaries and phantoms: every one needs its own secret."""
        return self.num_canaries + self.phantoms

    @property
    def num_forget(self) -> int:
        return len(self.repetitions) * self.forget_per_repetition

    @property
    def randomness_space(self) -> int:
        return 10**self.secret_digits


@dataclass
class InjectionResult:
    """The training split with canaries, and which rows are which.

    ``row_canary_ids[i]`` is the canary whose copy row i is, or -1 for a corpus row.
    """

    train: list[str]
    row_canary_ids: list[int]
    canaries: pd.DataFrame
    forget_indices: list[int] = field(default_factory=list)
    forget_canary_ids: list[int] = field(default_factory=list)
    forget_groups: list[int] = field(default_factory=list)
    retain_indices: list[int] = field(default_factory=list)


def _forbidden_secrets(texts: Iterable[str], k: int) -> set[str]:
    """Every k-digit string that occurs in some text.

    A k-digit secret is a substring of a text exactly when it is a window of one of the text's
    maximal digit runs, so one pass over the digits replaces N x |corpus| substring searches.
    """
    forbidden: set[str] = set()
    for text in texts:
        for run in _ASCII_DIGIT_RUNS.findall(text):
            forbidden.update(run[i : i + k] for i in range(len(run) - k + 1))
    return forbidden


def _draw_secrets(
    cfg: CanaryConfig, rng: np.random.Generator, forbidden: set[str], n: int
) -> list[str]:
    """``n`` distinct secrets, uniform over the k-digit strings not in ``forbidden``.

    Rejection sampling: one secret at a time, so a secret that has to be rejected leaves the
    others' draws unchanged (a held-out text with a secret only replaces that one).
    """
    k = cfg.secret_digits
    available = cfg.randomness_space - len(forbidden)
    if available < MIN_SPACE_PER_CANARY * n:
        _fail(
            "secret_digits",
            f"the corpus contains {len(forbidden)} of the 10^{k} possible secrets, leaving "
            f"{available} for {n} canaries",
            "raise secret_digits",
        )
    secrets: list[str] = []
    chosen: set[str] = set()
    while len(secrets) < n:
        secret = "".join(map(str, rng.integers(0, 10, size=k)))
        if secret in forbidden or secret in chosen:
            continue
        chosen.add(secret)
        secrets.append(secret)
    return secrets


def _choose_forget(cfg: CanaryConfig, rng: np.random.Generator) -> list[list[int]]:
    """Per repetition count, the canary ids to unlearn, in a seeded order.

    Chosen at random rather than the first f of each count, so that forget status is not tied
    to a template (canary i uses templates[i mod n]).
    """
    chosen = []
    for j in range(len(cfg.repetitions)):
        ids = np.arange(j * cfg.per_repetition, (j + 1) * cfg.per_repetition)
        chosen.append([int(i) for i in rng.permutation(ids)[: cfg.forget_per_repetition]])
    return chosen


def _choose_tuning(
    cfg: CanaryConfig, forget_by_count: list[list[int]], rng: np.random.Generator
) -> set[int]:
    """Per repetition count, the forget canaries that only choose operating points."""
    chosen: set[int] = set()
    for ids in forget_by_count:
        chosen.update(int(i) for i in rng.permutation(ids)[: cfg.tuning_per_repetition])
    return chosen


def _deal_groups(cfg: CanaryConfig, forget_by_count: list[list[int]]) -> dict[int, int]:
    """Request group (1..K) of every forget canary.

    The forget canaries, taken count by count (each count in its seeded order), are dealt
    round-robin: every request then holds as even a share of each repetition count as the
    numbers allow, so no cycle of the multi-request study is only weakly memorised canaries.
    """
    ordered = [cid for ids in forget_by_count for cid in ids]
    return {cid: position % cfg.requests + 1 for position, cid in enumerate(ordered)}


def _interleave(n_corpus: int, copies: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row layout: canary id per row of the new split, -1 where the corpus rows go (in order).

    Uniform over all interleavings: the copies take a random set of the rows, in random order.
    """
    total = n_corpus + len(copies)
    layout = np.full(total, -1, dtype=np.int64)
    positions = np.sort(rng.choice(total, size=len(copies), replace=False))
    layout[positions] = rng.permutation(copies)
    return layout


def inject_canaries(
    dataset: str, cfg: CanaryConfig, train: Sequence[str], held_out: Sequence[str]
) -> InjectionResult:
    """Insert the canaries of ``cfg`` into ``train``; ``held_out`` are validation + test texts.

    No secret occurs in any train, held-out or template text, so every canary text occurs in
    the new split exactly r times and never outside it.
    """
    if max(cfg.repetitions) > len(train):
        _fail(
            "repetitions",
            f"a canary inserted {max(cfg.repetitions)} times outweighs the {len(train)} "
            f"training examples of {dataset!r}",
            "lower the repetition counts or use more data",
        )
    k = cfg.secret_digits
    forbidden = _forbidden_secrets([*train, *held_out, *cfg.templates], k)
    rng = numpy_rng(cfg.seed, "canaries", dataset, "secrets")
    secrets = _draw_secrets(cfg, rng, forbidden, cfg.num_canaries)
    # Phantoms from their own stream, away from the inserted secrets: adding phantoms leaves
    # every inserted canary as it was.
    phantom_rng = numpy_rng(cfg.seed, "canaries", dataset, "phantoms")
    secrets += _draw_secrets(cfg, phantom_rng, forbidden | set(secrets), cfg.phantoms)
    forget_by_count = _choose_forget(cfg, numpy_rng(cfg.seed, "canaries", dataset, "forget"))
    tuning = _choose_tuning(
        cfg, forget_by_count, numpy_rng(cfg.seed, "canaries", dataset, "tuning")
    )
    groups = _deal_groups(cfg, forget_by_count)

    rows = []
    for cid, secret in enumerate(secrets):
        template = cfg.templates[cid % len(cfg.templates)]
        prefix = template[: -len(PLACEHOLDER)]
        phantom = cid >= cfg.num_canaries
        role = (
            "phantom"
            if phantom
            else "tuning"
            if cid in tuning
            else "removed"
            if cid in groups
            else "control"
        )
        rows.append(
            {
                "canary_id": cid,
                "template": template,
                "prefix": prefix,
                "secret": secret,
                "text": prefix + secret,
                "repetitions": 0 if phantom else cfg.repetitions[cid // cfg.per_repetition],
                "group": groups.get(cid, 0),
                "in_forget_set": cid in groups,
                "randomness_space": cfg.randomness_space,
                "role": role,
            }
        )
    table = pd.DataFrame(rows, columns=list(CANARY_COLUMNS))

    copies = np.repeat(table["canary_id"].to_numpy(), table["repetitions"].to_numpy())
    layout = _interleave(len(train), copies, numpy_rng(cfg.seed, "canaries", dataset, "positions"))
    texts = table["text"].tolist()
    corpus = iter(train)
    new_train = [next(corpus) if cid < 0 else texts[cid] for cid in layout]

    result = InjectionResult(
        train=new_train, row_canary_ids=[int(c) for c in layout], canaries=table
    )
    for row, cid in enumerate(result.row_canary_ids):
        if cid >= 0 and cid in groups:
            result.forget_indices.append(row)
            result.forget_canary_ids.append(cid)
            result.forget_groups.append(groups[cid])
        else:
            result.retain_indices.append(row)  # corpus rows and control canaries' copies
    return result


def write_injection(
    result: InjectionResult,
    train_path: str | Path,
    canaries_path: str | Path,
    forget_path: str | Path,
    retain_path: str | Path,
) -> dict[str, Any]:
    """Write the split (parquet), canary table (csv) and index sets (json), atomically.

    ``example_id`` is the row index in the new split, which the forget / retain indices use.
    Returns ``summarize(result)`` and the files' record (``artifacts``) for the manifest.
    """
    n = len(result.train)
    frame = pd.DataFrame(
        {
            "text": pd.Series(result.train, dtype=object),
            "example_id": np.arange(n, dtype=np.int64),
            "canary_id": np.asarray(result.row_canary_ids, dtype=np.int64),
        }
    )
    with atomic_path(train_path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    with atomic_path(canaries_path) as tmp:
        result.canaries.to_csv(tmp, index=False, lineterminator="\n")
    write_json(
        forget_path,
        {
            "indices": result.forget_indices,
            "canary_ids": result.forget_canary_ids,
            "groups": result.forget_groups,
        },
    )
    write_json(retain_path, {"indices": result.retain_indices})
    files = describe_files([train_path, canaries_path, forget_path, retain_path])
    return {**summarize(result), "files": files}


def summarize(result: InjectionResult) -> dict[str, Any]:
    """Sizes worth a glance in the manifest (builtins only, JSON-ready)."""
    table = result.canaries
    forget = table["in_forget_set"]
    return {
        "train_rows": len(result.train),
        "corpus_rows": result.row_canary_ids.count(-1),
        "canaries": len(table),
        "forget_canaries": int(forget.sum()),
        "control_canaries": int((table["role"] == "control").sum()),
        "roles": {role: int((table["role"] == role).sum()) for role in ROLES},
        "forget_rows": len(result.forget_indices),
        "retain_rows": len(result.retain_indices),
        "requests": int(table["group"].max()),
        "randomness_space": int(table["randomness_space"].iloc[0]),
    }


def read_canaries(path: str | Path) -> pd.DataFrame:
    """Read a canary table, keeping secrets as strings (leading zeros) and prefixes verbatim."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; rerun the inject_canaries rule")
    check(path)
    text_columns = {name: str for name in ("template", "prefix", "secret", "text")}
    table = pd.read_csv(path, dtype=text_columns, keep_default_na=False)
    missing = [c for c in CANARY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: not a canary table (missing {', '.join(missing)}); "
            "delete it and rerun the inject_canaries rule"
        )
    return table
