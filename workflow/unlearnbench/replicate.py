"""One replicate's files, as one value: what the stages of a (dataset, seed) read.

A replicate is a dataset with one replicate seed: its canary-injected training split, the forget
set D- and retained set D+ drawn for that seed, the canary table, the held-out splits, the
original model and its Fisher estimate. Rules name these inputs alike (``REPLICATE_INPUTS`` in
workflow/rules/common.smk), ``ReplicateFiles.from_inputs`` bundles them, and the stages take the
bundle instead of a dozen path arguments. Torch-free: data stages import it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PathLike = str | Path


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


@dataclass(frozen=True)
class ReplicateFiles:
    """Paths of one replicate (None: the rule does not read that file).

    ``train`` is the split the original model trained on (with canaries for nlp datasets);
    ``forget``/``retain`` the request's manifests of row indices into it; ``original`` the
    original model's directory; ``fisher`` the (tensors, meta) files of its Fisher estimate;
    ``retrained`` the retrained model's directory and ``retrained_metrics`` its metrics (the
    target every unlearned model is compared with); ``base`` the base model's directory (the
    reference of membership inference and of real-world memorisation).
    """

    dataset: str
    seed: int
    tokenizer_dir: Path
    train: Path
    forget: Path | None = None
    retain: Path | None = None
    canaries: Path | None = None
    test: Path | None = None
    validation: Path | None = None
    original: Path | None = None
    fisher: tuple[Path, Path] | None = None
    retrained: Path | None = None
    retrained_metrics: Path | None = None
    base: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"replicates: a replicate seed must be an integer, got {self.seed!r}")
        for name in ("tokenizer_dir", "train"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        for name in (
            "forget",
            "retain",
            "canaries",
            "test",
            "validation",
            "original",
            "retrained",
            "retrained_metrics",
            "base",
        ):
            object.__setattr__(self, name, _path(getattr(self, name)))
        if self.fisher is not None:
            tensors, meta = self.fisher
            object.__setattr__(self, "fisher", (Path(tensors), Path(meta)))

    @classmethod
    def from_inputs(cls, inputs: Any, dataset: str, seed: int) -> ReplicateFiles:
        """From a rule's named inputs: ``tokenizer`` (tokenizer.json), ``train``, and where the
        rule has them ``forget``, ``retain``, ``canaries``, ``test``, ``validation``, ``model``
        (the original model's files), ``fisher_tensors`` + ``fisher_meta``, ``retrained`` (the
        retrained model's files), ``retrained_metrics`` and ``base`` (the base model's files)."""

        def get(name: str) -> Any:
            return getattr(inputs, name, None)

        def folder(files: Any) -> Path | None:
            return None if files is None else Path(files[0]).parent

        fisher = get("fisher_tensors")
        return cls(
            dataset=dataset,
            seed=int(seed),
            tokenizer_dir=Path(inputs.tokenizer).parent,
            train=inputs.train,
            forget=get("forget"),
            retain=get("retain"),
            canaries=get("canaries"),
            test=get("test"),
            validation=get("validation"),
            original=folder(get("model")),
            fisher=None if fisher is None else (fisher, inputs.fisher_meta),
            retrained=folder(get("retrained")),
            retrained_metrics=get("retrained_metrics"),
            base=folder(get("base")),
        )

    def held_out(self) -> list[Path]:
        """The validation and test splits this replicate has (never trained on)."""
        return [p for p in (self.validation, self.test) if p is not None]

    def require(self, *names: str) -> None:
        """Refuse, naming the missing inputs, a bundle that lacks what a stage reads."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"{self.dataset} seed {self.seed}: this stage reads {', '.join(missing)}, which "
                "the rule does not give; add them to the rule's inputs (REPLICATE_INPUTS)"
            )
