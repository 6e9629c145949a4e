"""Training SANE: the loss goes down, checkpoints resume exactly, configs are checked."""

from __future__ import annotations

import pytest
import torch

from weightzoo.analysis.sane.batches import noise_augmentation, window_batches
from weightzoo.analysis.sane.model import SaneConfig, max_positions_of
from weightzoo.analysis.sane.train import load_sane, train_sane

SEED = 0


def _config(zoo, **overrides) -> SaneConfig:
    return SaneConfig(token_size=zoo["tokens"].shape[2], max_positions=max_positions_of(zoo["positions"]),
                      lr=3e-3, **overrides)


def _factory(zoo, crash_in_epoch: int | None = None):
    augment = noise_augmentation(0.05)

    def batches(epoch):
        for i, batch in enumerate(window_batches(zoo["tokens"], zoo["mask"], zoo["positions"], 8, 16,
                                                 augment, seed=SEED, epoch=epoch, windows_per_sample=2)):
            if epoch == crash_in_epoch and i == 2:
                raise KeyboardInterrupt("simulated crash")
            yield batch
    return batches


def _same_weights(first, second) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_loss_goes_down_on_a_tiny_token_zoo(token_zoo):
    messages = []
    model, history = train_sane(_factory(token_zoo), _config(token_zoo), epochs=8, seed=SEED,
                                progress=messages.append)
    first, last = history[0], history[-1]
    assert [row["epoch"] for row in history] == list(range(1, 9))
    assert last["loss"] < 0.6 * first["loss"], [round(row["loss"], 3) for row in history]
    assert last["loss_recon"] < 0.7 * first["loss_recon"]
    assert last["loss_contrast"] < first["loss_contrast"]
    assert first["n_windows"] == 96 and first["n_batches"] == 6
    assert len(messages) == 8 and messages[-1].startswith("sane: epoch 8/8")
    assert not model.training


def test_a_crashed_run_resumes_to_the_same_weights(token_zoo, tmp_path):
    config = _config(token_zoo)
    crashed, straight = tmp_path / "crashed", tmp_path / "straight"
    with pytest.raises(KeyboardInterrupt):
        train_sane(_factory(token_zoo, crash_in_epoch=3), config, checkpoint_dir=crashed, epochs=4, seed=SEED)
    assert sorted(p.name for p in crashed.iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    # a checkpoint write that died before its rename must be ignored
    (crashed / "epoch-0003.pt.tmp").write_bytes(b"half a checkpoint")

    resumed_model, resumed = train_sane(_factory(token_zoo), config, checkpoint_dir=crashed, epochs=4, seed=SEED)
    model, history = train_sane(_factory(token_zoo), config, checkpoint_dir=straight, epochs=4, seed=SEED)

    assert [row["epoch"] for row in resumed] == [1, 2, 3, 4]
    assert [row["loss"] for row in resumed] == [row["loss"] for row in history]
    assert _same_weights(resumed_model, model)
    loaded, loaded_history = load_sane(crashed)
    assert _same_weights(loaded, model) and len(loaded_history) == 4


def test_a_finished_checkpoint_is_returned_without_training(token_zoo, tmp_path):
    config = _config(token_zoo)
    model, history = train_sane(_factory(token_zoo), config, checkpoint_dir=tmp_path, epochs=1, seed=SEED)

    def no_batches(epoch):
        raise AssertionError(f"epoch {epoch} should not be trained again")
    again, again_history = train_sane(no_batches, config, checkpoint_dir=tmp_path, epochs=1, seed=SEED)
    assert _same_weights(again, model) and again_history == history


@pytest.mark.parametrize("change", [{"latent_dim": 8}, {"gamma": 0.5}, {"seed": 1}])
def test_a_changed_config_against_a_checkpoint_is_a_clear_error(token_zoo, tmp_path, change):
    train_sane(_factory(token_zoo), _config(token_zoo), checkpoint_dir=tmp_path, epochs=1, seed=SEED)
    seed = change.get("seed", SEED)
    config = _config(token_zoo, **{k: v for k, v in change.items() if k != "seed"})
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"different SANE config.*{key}"):
        train_sane(_factory(token_zoo), config, checkpoint_dir=tmp_path, epochs=2, seed=seed)


def test_an_empty_epoch_is_an_error(token_zoo):
    with pytest.raises(ValueError, match="no batches for epoch 1"):
        train_sane(lambda epoch: [], _config(token_zoo), epochs=1)


def test_threads_are_restored_after_training(token_zoo):
    torch.set_num_threads(2)  # the autouse fixture restores the session's own setting
    seen = []

    def batches(epoch):
        seen.append(torch.get_num_threads())
        return _factory(token_zoo)(epoch)
    train_sane(batches, _config(token_zoo, n_layers=1), epochs=1, threads=1)
    assert seen == [1] and torch.get_num_threads() == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a CUDA device")
def test_cuda_without_a_device_is_a_clear_error(token_zoo):
    with pytest.raises(ValueError, match="no CUDA device"):
        train_sane(_factory(token_zoo), _config(token_zoo), epochs=1, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_the_requested_device(token_zoo):
    model, _ = train_sane(_factory(token_zoo), _config(token_zoo), epochs=1, device="cuda")
    assert all(p.is_cuda for p in model.parameters())
