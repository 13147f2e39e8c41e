"""How a DP-SGD step gets its clipped per-sample gradients (``train_dp.grad_sample_mode``).

Every route ends in Opacus's optimizer, noise and accountant (the same classes
``PrivacyEngine.make_private`` builds); they differ only in how the per-sample gradients, or
their norms, are found:

- ``lean``: the per-sample gradients of ``hooks``, bitwise, without the batch gradient that
  ``hooks`` computes and then discards (dp_lean.py).
- ``folded`` (default; the fastest here, tests/benchmarks/bench_dp_throughput.py): ``lean``
  without the costs that are Opacus's, not DP-SGD's (dp_folded.py): the batch-size factor of
  Opacus's "mean" reduction goes into the clip factors instead of every output gradient; the
  output layer and softmax run on real positions only, as in non-private training; linear
  layers' per-sample gradients are formed sequence by sequence. The same step up to float
  rounding, not bitwise.
- ``hooks``: Opacus's module hooks and per-layer rules.
- ``functorch``: Opacus's per-layer ``torch.func`` rules for every layer (slower; a cross-check).
- ``vmap``: the whole model under ``torch.func.vmap(grad)`` (fisher.per_example_gradients),
  whatever its layers; one extra no-grad forward pass for the reported loss.
- ``ghost``: Opacus's ghost clipping: per-sample gradient norms from each layer's inputs and
  output gradients, never the per-sample gradients themselves, then a second backward pass of
  the clip-weighted loss. Memory stays that of ordinary training (the route for large models
  on a GPU), but it cannot clip a parameter two layers share: refused when the embeddings are
  tied and trained (GPT-2 and OPT tie them).

Each route's per-sample gradients are checked against single-example backward passes on tiny
GPT-2 and OPT models, and its clipped, noised step against a loop over examples
(tests/unit/training/test_dp_routes.py).

The per-sample objective is each sequence's mean token loss (``per_sequence_loss``); the batch
loss is their mean, which Opacus's "mean" reduction undoes per sample.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from opacus.accountants import IAccountant, create_accountant
from opacus.grad_sample import GradSampleHooks, GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.validators import ModuleValidator

from ..fisher.per_example_grads import parameter_layout, per_example_gradients
from ..lm_data import Batch, token_losses
from .dp_accounting import sample_rate
from .dp_folded import FoldedDPOptimizer
from .dp_layers import opacus_ready, shared_parameters
from .dp_lean import LeanGradSampler

if TYPE_CHECKING:
    from .dp import DPConfig

GRAD_SAMPLE_MODES = ("lean", "folded", "hooks", "functorch", "vmap", "ghost")


def per_sequence_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, float, int]:
    """Mean over sequences of each sequence's mean token loss (the per-sample objective), and
    the batch's summed token loss and predicted-token count (for token-mean reporting)."""
    loss, total, count = _sequence_losses(model, batch)
    return loss.mean(), total, int(count.sum())


def _sequence_losses(model, batch: Batch, skip_padding: bool = False):
    """Each sequence's mean token loss, the batch's summed token loss, and each sequence's
    predicted-token count. Opacus's per-sample rules need every layer's (B, T, .) layout: no
    padding skipping, except on the folded route, which reads the packed output layer."""
    total, count = token_losses(model, batch, skip_padding=skip_padding)
    return total / count.clamp(min=1), float(total.detach().sum()), count


class PrivateRoute:
    """DP-SGD attached to a model: ``step(batch)`` takes one private step (None: an empty
    Poisson batch) and returns (summed token loss, predicted tokens); ``accountant`` counts the
    steps; ``cleanup()`` leaves a plain model (also after an error)."""

    optimizer_class: type[DPOptimizer] = DPOptimizer

    def __init__(self, model, optimizer, n: int, cfg: DPConfig, noise: float, generator) -> None:
        ModuleValidator.validate(model, strict=True)
        q = sample_rate(n, cfg.batch_size)
        self.model = model
        self.optimizer = self.optimizer_class(
            optimizer,
            noise_multiplier=noise,
            max_grad_norm=cfg.max_grad_norm,
            expected_batch_size=int(n * q),  # as PrivacyEngine.make_private sets it
            loss_reduction="mean",
            generator=generator,
            secure_mode=False,  # seeded noise: reproducible runs (see dp.py)
        )
        self.accountant: IAccountant = create_accountant(mechanism=cfg.accountant)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=q))
        self._ready = opacus_ready(model)
        self._ready.__enter__()
        try:
            self._attach(cfg)
        except BaseException:
            self._ready.__exit__(None, None, None)
            raise

    def _attach(self, cfg: DPConfig) -> None:
        """Attach the route's hooks (after OPT's layers are made Opacus-ready)."""

    def step(self, batch: Batch | None) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        if batch is None:
            # Nothing to forward: zero per-sample gradients take Opacus's empty-batch path
            # (clip nothing, add the noise, step, count the step for the accountant).
            self._empty()
            self.optimizer.step()
            return 0.0, 0
        total, count = self._gradients(batch)
        self.optimizer.step()
        return total, count

    def _empty(self) -> None:
        for p in self.optimizer.params:
            p.grad_sample = p.new_zeros((0, *p.shape))

    def _gradients(self, batch: Batch) -> tuple[float, int]:
        raise NotImplementedError

    def cleanup(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._detach()
        self._ready.__exit__(None, None, None)
        for p in self.model.parameters():
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)

    def _detach(self) -> None:
        pass


class OpacusHooksRoute(PrivateRoute):
    """``hooks`` and ``functorch``: Opacus's GradSampleHooks, as make_private attaches them."""

    def _attach(self, cfg):
        self.hooks = GradSampleHooks(
            self.model, loss_reduction="mean", force_functorch=cfg.grad_sample_mode == "functorch"
        )
        self.hooks.forbid_grad_accumulation()

    def _gradients(self, batch):
        loss, total, count = per_sequence_loss(self.model, batch)
        with warnings.catch_warnings():
            # The token embedding's input (ids) needs no gradient; Opacus's hook still fires.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        return total, count

    def _detach(self):
        self.hooks.cleanup()


class LeanRoute(PrivateRoute):
    def _attach(self, cfg):
        self.sampler = LeanGradSampler(self.model, cfg.key)

    def _gradients(self, batch):
        with self.sampler.forward():
            loss, total, count = per_sequence_loss(self.model, batch)
        loss.backward()
        self.sampler.collect()
        return total, count

    def _detach(self):
        self.sampler.remove()


class FoldedRoute(LeanRoute):
    optimizer_class = FoldedDPOptimizer

    def _attach(self, cfg):
        self.sampler = LeanGradSampler(self.model, cfg.key, folded=True)

    def _gradients(self, batch):
        with self.sampler.forward():
            per_sample, total, rows = _sequence_losses(self.model, batch, skip_padding=True)
            # The output layer's packed input: tokens per sequence, read off the device once.
            self.sampler.rows = rows.tolist()
        per_sample.mean().backward()
        self.sampler.collect()
        self.optimizer.sample_scale = float(self.sampler.batch_size)
        return total, sum(self.sampler.rows)


class VmapRoute(PrivateRoute):
    def _gradients(self, batch):
        params = self.optimizer.params
        names = {id(p): n for n, p in self.model.named_parameters()}
        layout = parameter_layout(self.model, [names[id(p)] for p in params])
        rows = per_example_gradients(
            self.model,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            parameter_names=[s.name for s in layout],
            method="vmap",
            chunk_size=batch.input_ids.shape[0],
            progress=False,
        )
        by_name = {names[id(p)]: p for p in params}
        for s in layout:
            by_name[s.name].grad_sample = rows[:, s.start : s.stop].view(-1, *s.shape)
        with torch.no_grad():
            _, total, count = _sequence_losses(self.model, batch)
        return total, int(count.sum())


class GhostRoute(PrivateRoute):
    optimizer_class = DPOptimizerFastGradientClipping

    def __init__(self, model, optimizer, n, cfg, noise, generator) -> None:
        shared = shared_parameters(model)
        if shared:
            listed = "; ".join(f"{p} (in {', '.join(layers)})" for p, layers in shared.items())
            raise ValueError(
                f"{cfg.key}.grad_sample_mode: 'ghost' clipping cannot clip a parameter that "
                f"two layers share, and this model ties {listed}; use 'folded' (the default) "
                f"or 'hooks', or leave the tied embeddings frozen ({cfg.key}.trainable: "
                "norms_biases or last_block)"
            )
        super().__init__(model, optimizer, n, cfg, noise, generator)

    def _attach(self, cfg):
        self.hooks = GradSampleHooksFastGradientClipping(
            self.model,
            loss_reduction="mean",
            max_grad_norm=cfg.max_grad_norm,
            use_ghost_clipping=True,
        )

    def _empty(self):
        for p in self.optimizer.params:
            p.grad = torch.zeros_like(p)

    def _gradients(self, batch):
        per_sample, total, count = _sequence_losses(self.model, batch)
        # Two backward passes: per-sample norms, then the loss weighted by each clip factor.
        DPTensorFastGradientClipping(self.hooks, self.optimizer, per_sample, "mean").backward()
        return total, int(count.sum())

    def _detach(self):
        self.hooks.cleanup()


ROUTES: dict[str, type[PrivateRoute]] = {
    "lean": LeanRoute,
    "folded": FoldedRoute,
    "hooks": OpacusHooksRoute,
    "functorch": OpacusHooksRoute,
    "vmap": VmapRoute,
    "ghost": GhostRoute,
}


def attach(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    n: int,
    cfg: DPConfig,
    noise: float,
    generator: torch.Generator | None = None,
) -> PrivateRoute:
    """DP-SGD on ``model`` by the route ``cfg.grad_sample_mode``, for N = ``n`` examples at
    ``cfg``'s expected batch size; noise drawn from ``generator`` (on the model's device)."""
    return ROUTES[cfg.grad_sample_mode](model, optimizer, n, cfg, noise, generator)
