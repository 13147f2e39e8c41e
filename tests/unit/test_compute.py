"""Device and precision chosen once: the rule's GPUs, CUDA_VISIBLE_DEVICES, compute.device and
compute.precision; models placed in float32; fingerprints for every dtype.

No GPU here: the CUDA branches run with torch.cuda mocked, and the bf16 autocast regions run on
the CPU (allowed by the test only; the frame never autocasts on the CPU). On a GPU the same
regions are checked by tests/gpu/check_gpu.py, at the tolerances stated there.
"""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from unlearnbench.compute import (
    Compute,
    autocast_dtype,
    autocast_forward,
    choose_device,
    place_model,
    precision_policy,
)
from unlearnbench.models import ModelConfig, build_model, fingerprint
from unlearnbench.stage import Frame, run_stage

TINY = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)


def tiny_model():
    return build_model(TINY, vocab_size=40, eos_id=0, seed=0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")


def test_the_rule_s_gpus_choose_cuda_and_compute_device_cpu_overrides(two_gpus):
    assert choose_device(0) == "cpu"
    assert choose_device(None) == "cpu"
    assert choose_device(1) == "cuda"
    assert choose_device(2) == "cuda"
    assert choose_device(1, override="cpu") == "cpu"


def test_a_job_that_sees_fewer_gpus_than_it_asked_for_is_refused(two_gpus):
    with pytest.raises(
        RuntimeError, match=r"asks for 4 GPU\(s\) but sees 2 \(CUDA_VISIBLE_DEVICES=3,5\)"
    ):
        choose_device(4)


def test_bad_compute_settings_name_their_key():
    with pytest.raises(ValueError, match=r"compute\.device: 'cuda' is not one of auto, cpu"):
        choose_device(1, override="cuda")
    with pytest.raises(ValueError, match=r"compute\.precision: 'fp16'"):
        Compute(precision="fp16")
    assert Compute.from_params({}) == Compute("auto", "float32")
    assert Compute.from_params({"compute": {"precision": "bf16"}}).precision == "bf16"


def test_bf16_autocasts_on_cuda_only():
    assert autocast_dtype("cuda", "bf16") == "bfloat16"
    assert autocast_dtype("cuda", "float32") is None
    assert autocast_dtype("cpu", "bf16") is None  # CPU results stay bitwise float32
    assert Frame(logging.getLogger("t"), "cpu", "bf16").autocast is None
    assert Frame(logging.getLogger("t"), "cuda", "bf16").autocast == "bfloat16"


def test_the_frame_reads_compute_from_the_rule_s_params(tmp_path):
    seen = {}

    def work(frame):
        seen["frame"] = frame
        x = torch.ones(4, 4)
        with autocast_forward(frame.device):
            seen["dtype"] = (x @ x).dtype
        return {}

    params = {"compute": {"device": "auto", "precision": "bf16"}}
    run_stage(str(tmp_path / "m.json"), None, params, {}, work)
    assert seen["frame"].precision == "bf16" and seen["frame"].device == "cpu"
    assert seen["dtype"] == torch.float32  # no autocast on the CPU


def test_autocast_regions_follow_the_policy():
    x = torch.ones(4, 4)
    with autocast_forward("cpu"):
        assert (x @ x).dtype == torch.float32  # no policy: float32
    with precision_policy("bfloat16"), autocast_forward("cpu"):
        assert (x @ x).dtype == torch.float32  # bf16 policy, but the CPU: off
    with precision_policy("bfloat16", allow_cpu=True), autocast_forward(torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16  # the GPU path, exercised on the CPU
    with autocast_forward("cpu"):
        assert (x @ x).dtype == torch.float32  # the policy ends with its block


def test_place_model_casts_to_float32_and_leaves_float32_models_alone():
    model = tiny_model()
    before = fingerprint(model)
    assert place_model(model, "cpu") is model and fingerprint(model) == before
    half = tiny_model().to(torch.float16)  # as transformers 5 loads a float16 hub checkpoint
    placed = place_model(half, "cpu")
    assert all(p.dtype == torch.float32 for p in placed.parameters())
    reference = tiny_model().to(torch.float16).float()
    assert fingerprint(placed) == fingerprint(reference)


def reference_fingerprint(model):
    """The fingerprint as it was (numpy bytes): float32 models must keep their fingerprints."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_fingerprints_of_float32_models_are_unchanged_and_bf16_ones_work():
    model = tiny_model()
    assert fingerprint(model) == reference_fingerprint(model)
    half = tiny_model().to(torch.float16)
    assert fingerprint(half) == reference_fingerprint(half)
    bf16 = tiny_model().to(torch.bfloat16)
    first = fingerprint(bf16)
    assert first == fingerprint(tiny_model().to(torch.bfloat16))  # deterministic
    # The same bits read as float16 are another model.
    as_half = tiny_model().to(torch.bfloat16)
    for p in as_half.parameters():
        p.data = p.data.view(torch.float16)
    assert fingerprint(as_half) != first
    with torch.no_grad():
        next(bf16.parameters())[0, 0] += 1
    assert fingerprint(bf16) != first
