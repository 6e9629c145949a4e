"""Invariants of the task dataset loaders; local file formats are written by the tests."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from weightzoo.data import DATASET_NAMES, load_dataset, split_indices


def write_idx(path, array, magic=None, compress=False):
    """Write a uint8 array in idx format (optionally with a wrong magic number)."""
    header = magic if magic is not None else 0x0800 + array.ndim
    payload = header.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def make_idx_directory(directory, compress=False):
    """Write four tiny MNIST-like idx files; return the raw arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(6, 5, 5)),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 4, 9]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 5, 5)),
        "t10k-labels-idx1-ubyte": np.array([5, 6, 7]),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if compress else "")), array, compress=compress)
    return arrays


def write_cifar_batch(path, data, labels):
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"tiny", b"data": data, b"labels": list(labels)}, handle, protocol=2)


def make_cifar_directory(directory, train_batches=("data_batch_1", "data_batch_3")):
    """Write tiny CIFAR-10 batches (two images each); return the raw rows and labels."""
    rng = np.random.default_rng(1)
    written = {}
    for offset, name in enumerate((*train_batches, "test_batch")):
        data = rng.integers(0, 256, size=(2, 3072)).astype(np.uint8)
        labels = [offset, 9 - offset]
        write_cifar_batch(directory / name, data, labels)
        written[name] = (data, labels)
    return written


def expected_standardised(train_raw, test_raw, scale):
    train = train_raw.astype(np.float64) / scale
    test = test_raw.astype(np.float64) / scale
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return (train - mean) / std, (test - mean) / std


@pytest.mark.parametrize(
    ("name", "n_total", "input_shape"), [("mnist5k", 5000, (1, 28, 28)), ("digits", 1797, (1, 8, 8))]
)
def test_packaged_images_have_contract_shapes_and_ten_classes(name, n_total, input_shape):
    data = load_dataset(name)
    n_test = round(0.2 * n_total)
    assert data.x_train.shape == (n_total - n_test, *input_shape)
    assert data.x_test.shape == (n_test, *input_shape)
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.y_train.dtype == data.y_test.dtype == torch.int64
    assert data.y_train.shape == (n_total - n_test,)
    assert set(data.y_train.tolist()) == set(range(10))
    assert (data.task, data.n_classes, data.output_size, data.input_shape) == ("classification", 10, 10, input_shape)


def test_digits_are_the_seeded_split_of_the_raw_data_standardised_by_train_statistics():
    digits = load_digits()
    images = digits.data.reshape(-1, 1, 8, 8)
    train, test = split_indices(len(images), 0.3, 7)
    data = load_dataset("digits", split_seed=7, test_fraction=0.3)
    expected_train, expected_test = expected_standardised(images[train], images[test], 16.0)
    np.testing.assert_allclose(data.x_train.numpy(), expected_train, atol=1e-5)
    np.testing.assert_allclose(data.x_test.numpy(), expected_test, atol=1e-5)
    assert torch.equal(data.y_test, torch.from_numpy(digits.target[test]))
    assert abs(float(data.x_train.mean())) < 1e-5
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3


def test_split_is_deterministic_disjoint_and_complete():
    train, test = split_indices(101, 0.25, 3)
    again_train, again_test = split_indices(101, 0.25, 3)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert len(test) == round(0.25 * 101)
    assert not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(101))
    assert not np.array_equal(test, split_indices(101, 0.25, 4)[1])


def test_same_arguments_share_one_cached_dataset_and_other_seeds_differ():
    first = load_dataset("digits", split_seed=1)
    assert load_dataset("digits", split_seed=1, options={}) is first
    other = load_dataset("digits", split_seed=2)
    assert not torch.equal(first.y_test, other.y_test)


@pytest.mark.parametrize("frequency", [0.5, 1.0, 3.0])
def test_sinusoid_targets_follow_the_formula(frequency):
    data = load_dataset("sinusoid", options={"frequency": frequency, "n_samples": 200, "seed": 5})
    assert (data.task, data.n_classes, data.output_size, data.input_shape) == ("regression", 0, 1, (2,))
    assert data.x_train.shape == (160, 2) and data.x_test.shape == (40, 2)
    assert data.y_train.dtype == torch.float32
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        x64 = x.double()
        expected = torch.cos(2 * torch.pi * frequency * x64[:, 0]) * torch.cos(2 * torch.pi * frequency * x64[:, 1])
        torch.testing.assert_close(y.double(), expected, atol=1e-6, rtol=0)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_sinusoid_seed_option_changes_the_inputs():
    first = load_dataset("sinusoid", options={"seed": 0})
    second = load_dataset("sinusoid", options={"seed": 1})
    assert first.x_train.shape == (800, 2)
    assert not torch.equal(first.x_train, second.x_train)


@pytest.mark.parametrize(
    ("name", "kwargs", "named"),
    [
        ("imagenet", {}, "mnist5k"),
        ("sinusoid", {"options": {"frequency": -1.0}}, "frequency"),
        ("sinusoid", {"options": {"n_samples": 1}}, "n_samples"),
        ("digits", {"test_fraction": 1.0}, "test_fraction"),
        ("digits", {"test_fraction": 0.0}, "test_fraction"),
        ("digits", {"options": {"frequency": 2.0}}, "frequency"),
        ("mnist-idx", {}, "path"),
        ("cifar10", {"options": {"path": ""}}, "path"),
    ],
)
def test_bad_names_and_options_raise_value_errors_naming_them(name, kwargs, named):
    with pytest.raises(ValueError, match=named):
        load_dataset(name, **kwargs)


def test_unknown_name_error_lists_every_known_dataset():
    with pytest.raises(ValueError) as error:
        load_dataset("imagenet")
    assert all(name in str(error.value) for name in DATASET_NAMES)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_reads_the_files_own_split(tmp_path, compress):
    raw = make_idx_directory(tmp_path, compress=compress)
    data = load_dataset("mnist-idx", options={"path": tmp_path})
    expected_train, expected_test = expected_standardised(
        raw["train-images-idx3-ubyte"][:, None], raw["t10k-images-idx3-ubyte"][:, None], 255.0
    )
    np.testing.assert_allclose(data.x_train.numpy(), expected_train, atol=1e-5)
    np.testing.assert_allclose(data.x_test.numpy(), expected_test, atol=1e-5)
    assert data.y_train.tolist() == [0, 1, 2, 3, 4, 9]
    assert data.y_test.tolist() == [5, 6, 7]
    assert data.input_shape == (1, 5, 5) and data.n_classes == 10


def test_mnist_idx_rejects_a_bad_magic_number_naming_the_file(tmp_path):
    make_idx_directory(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([5, 6, 7]), magic=0x0803)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*magic"):
        load_dataset("mnist-idx", options={"path": tmp_path})


def test_mnist_idx_rejects_a_truncated_payload_and_a_missing_file(tmp_path):
    raw = make_idx_directory(tmp_path)
    images_path = tmp_path / "train-images-idx3-ubyte"
    images_path.write_bytes(images_path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_dataset("mnist-idx", options={"path": tmp_path})
    write_idx(images_path, raw["train-images-idx3-ubyte"])
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist-idx", options={"path": tmp_path})


def test_cached_local_dataset_sees_files_replaced_on_disk(tmp_path):
    make_idx_directory(tmp_path)
    before = load_dataset("mnist-idx", options={"path": tmp_path})
    labels_path = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(labels_path, np.array([1, 1, 1]))
    stat = labels_path.stat()
    os.utime(labels_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load_dataset("mnist-idx", options={"path": str(tmp_path)})
    assert before.y_test.tolist() == [5, 6, 7] and after.y_test.tolist() == [1, 1, 1]


def test_cifar10_reads_a_subset_of_batches_channel_major(tmp_path):
    written = make_cifar_directory(tmp_path)
    data = load_dataset("cifar10", options={"path": tmp_path})
    train_rows = np.concatenate([written["data_batch_1"][0], written["data_batch_3"][0]])
    expected_train, expected_test = expected_standardised(
        train_rows.reshape(-1, 3, 32, 32), written["test_batch"][0].reshape(-1, 3, 32, 32), 255.0
    )
    np.testing.assert_allclose(data.x_train.numpy(), expected_train, atol=1e-5)
    np.testing.assert_allclose(data.x_test.numpy(), expected_test, atol=1e-5)
    assert data.y_train.tolist() == [0, 9, 1, 8]
    assert data.y_test.tolist() == [2, 7]
    assert data.input_shape == (3, 32, 32)
    channel_means = data.x_train.mean(dim=(0, 2, 3))
    torch.testing.assert_close(channel_means, torch.zeros(3), atol=1e-5, rtol=0)


def test_cifar10_names_a_missing_test_batch(tmp_path):
    make_cifar_directory(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_dataset("cifar10", options={"path": tmp_path})


def test_cifar10_needs_at_least_one_training_batch(tmp_path):
    make_cifar_directory(tmp_path, train_batches=())
    with pytest.raises(FileNotFoundError, match="data_batch"):
        load_dataset("cifar10", options={"path": tmp_path})


@pytest.mark.parametrize(
    "content",
    [b"not a pickle", pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), pickle.dumps(os.getcwd)],
)
def test_cifar10_rejects_garbled_or_foreign_batches_naming_the_file(tmp_path, content):
    make_cifar_directory(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", options={"path": tmp_path})
