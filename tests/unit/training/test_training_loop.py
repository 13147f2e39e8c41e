"""Training loop: deterministic, and a resumed run equals an uninterrupted one bitwise."""

from __future__ import annotations

import pytest
import torch
from unlearnbench.models import ModelConfig, build_model, fingerprint, load_model, save_model
from unlearnbench.training.checkpoint import load_checkpoint, save_checkpoint
from unlearnbench.training.loop import TrainConfig, lr_at, make_optimizer, train

VOCAB, EOS = 50, 0


def tiny_model(seed=0):
    cfg = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32)
    return build_model(cfg, vocab_size=VOCAB, eos_id=EOS, seed=seed)


def data(n=24):
    gen = torch.Generator().manual_seed(5)
    return [
        [
            EOS,
            *torch.randint(
                1, VOCAB, (int(torch.randint(3, 12, (1,), generator=gen)),), generator=gen
            ).tolist(),
            EOS,
        ]
        for _ in range(n)
    ]


RECIPE = dict(epochs=3, batch_size=5, lr=3e-3, seed=1, warmup_steps=2, checkpoint_every=2)


def test_training_reduces_loss_and_is_deterministic():
    runs = []
    for _ in range(2):
        model = tiny_model()
        history = train(model, data(), TrainConfig(**RECIPE), pad_id=EOS)
        runs.append(fingerprint(model))
    assert history["epoch_loss"][-1] < history["epoch_loss"][0]
    assert len(history["epoch_loss"]) == 3 and history["steps"] == 15
    assert runs[0] == runs[1]


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [3, 5, 11])  # mid-epoch, at an epoch boundary, late
def test_resume_is_bitwise_equal(tmp_path, kill_at):
    reference = tiny_model()
    ref_history = train(reference, data(), TrainConfig(**RECIPE), pad_id=EOS)

    def kill(step):
        if step == kill_at:
            raise Killed

    model = tiny_model()
    with pytest.raises(Killed):
        train(
            model, data(), TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path, on_step=kill
        )
    resumed = tiny_model()  # a fresh process starts from the initial weights again
    history = train(resumed, data(), TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path)
    assert fingerprint(resumed) == fingerprint(reference)
    assert history["epoch_loss"] == ref_history["epoch_loss"]
    assert not tmp_path.exists()  # the checkpoint is cleared after success


def test_checkpoint_for_other_recipe_is_discarded(tmp_path, caplog):
    model = tiny_model()
    opt = make_optimizer(model, TrainConfig(**RECIPE))
    save_checkpoint(
        tmp_path,
        model,
        opt,
        {"step": 1, "history": {}, "running": {}, "config": {"other": 1}, "examples": 3},
    )
    clean = tiny_model()
    train(clean, data(), TrainConfig(**RECIPE), pad_id=EOS)
    restarted = tiny_model()
    with caplog.at_level("WARNING", logger="unlearnbench"):
        train(restarted, data(), TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path)
    assert "checkpoint discarded" in caplog.text and "config" in caplog.text
    assert fingerprint(restarted) == fingerprint(clean)


def test_checkpoint_of_other_data_with_the_same_count_is_discarded(tmp_path, caplog):
    """The fault that went unnoticed: same recipe and example count, other token ids (a
    changed split or tokenizer). Resuming gave a model no clean run produces."""
    changed = [[EOS, *(t % (VOCAB - 1) + 1 for t in s[1:-1][::-1]), EOS] for s in data()]

    def kill(step):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_model(), data(), TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path,
              on_step=kill)  # fmt: skip
    clean = tiny_model()
    train(clean, changed, TrainConfig(**RECIPE), pad_id=EOS)
    resumed = tiny_model()
    with caplog.at_level("WARNING", logger="unlearnbench"):
        train(resumed, changed, TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path)
    assert "written for other inputs" in caplog.text
    assert fingerprint(resumed) == fingerprint(clean)


def test_unreadable_checkpoint_is_discarded(tmp_path, caplog):
    (tmp_path / "state.json").write_text("{not json")
    (tmp_path / "state.safetensors").write_bytes(b"garbage")
    clean = tiny_model()
    train(clean, data(), TrainConfig(**RECIPE), pad_id=EOS)
    restarted = tiny_model()
    with caplog.at_level("WARNING", logger="unlearnbench"):
        train(restarted, data(), TrainConfig(**RECIPE), pad_id=EOS, checkpoint_dir=tmp_path)
    assert "unreadable" in caplog.text and fingerprint(restarted) == fingerprint(clean)


def test_checkpoint_round_trip_restores_optimizer(tmp_path):
    model = tiny_model()
    cfg = TrainConfig(**RECIPE)
    train(model, data(6), TrainConfig(**{**RECIPE, "epochs": 1}), pad_id=EOS)
    opt = make_optimizer(model, cfg)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    save_checkpoint(tmp_path, model, opt, {"x": 1}, extra_tensors={"rng": torch.arange(3)})
    clone = tiny_model(seed=9)
    opt2 = make_optimizer(clone, cfg)
    meta, extra = load_checkpoint(tmp_path, clone, opt2)
    assert meta == {"x": 1} and torch.equal(extra["rng"], torch.arange(3))
    assert fingerprint(clone) == fingerprint(model)
    before, after = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert before.keys() == after.keys()
    for idx, state in before.items():
        assert all(torch.equal(state[k], after[idx][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_model()
    opt = make_optimizer(model, TrainConfig(**RECIPE))
    save_checkpoint(tmp_path, model, opt, {})
    (tmp_path / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checkpoint unreadable"):
        load_checkpoint(tmp_path, model, opt)


def test_lr_schedule():
    cfg = TrainConfig(**RECIPE)
    assert lr_at(0, 10, cfg) == pytest.approx(cfg.lr / 2)
    assert lr_at(2, 10, cfg) == pytest.approx(cfg.lr)
    assert lr_at(10, 10, cfg) == pytest.approx(cfg.lr * 0.1)


def test_bad_recipe_names_key():
    with pytest.raises(ValueError, match=r"train.finetune.lr: must be > 0"):
        TrainConfig(**{**RECIPE, "lr": 0, "key": "train.finetune"})


def test_model_save_load_and_errors(tmp_path):
    model = tiny_model()
    save_model(model, tmp_path / "m")
    assert fingerprint(load_model(tmp_path / "m", vocab_size=VOCAB)) == fingerprint(model)
    with pytest.raises(ValueError, match="different runs"):
        load_model(tmp_path / "m", vocab_size=VOCAB + 1)  # more tokens than embedding rows
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="model files missing"):
        load_model(tmp_path / "nothing")


def test_bad_model_shape_names_key():
    with pytest.raises(ValueError, match=r"model\.n_embd"):
        ModelConfig(n_embd=30, n_head=4)
