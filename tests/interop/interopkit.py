"""Tiny sources in each foreign layout, written the way the foreign code writes them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import icechunk
import numpy as np
import pandas as pd
import torch
from torch import nn

icechunk.set_logs_filter("warn,icechunk::storage::object_store=error")

NWS_COLUMNS = ["dataset", "lrate", "batch_size", "batch_norm", "augmentation", "optimizer", "activation",
               "initialization", "filter_size", "depth_conv", "depth_fc", "width_conv", "width_fc",
               "weightn_conv", "weightn_fc", "path"]
# A tiny NWS architecture: 3 conv layers (one per block), widths 1·2^block, one fc layer of 4.
NWS_ARCH = {"filter_size": 3, "depth_conv": 3, "depth_fc": 1, "width_conv": 1, "width_fc": 4}


def nws_tf_variables(rng, bn: bool = True) -> list[tuple[str, np.ndarray]]:
    """The TF variables of model.deepnn for NWS_ARCH in creation order, TF shapes
    (conv [h, w, in, out], fc [in, out]), batch norm as tensorlayer creates it."""
    k, variables, channels = NWS_ARCH["filter_size"], [], 3
    for block in range(3):
        width = NWS_ARCH["width_conv"] * 2 ** block
        variables += [(f"conv{block + 1}1_W", rng.standard_normal((k, k, channels, width))),
                      (f"conv{block + 1}1_b", rng.standard_normal(width))]
        variables += _tl_batch_norm(rng, width) if bn else []
        channels = width
    features = channels * 4 * 4
    variables += [("fc1_W", rng.standard_normal((features, 4))), ("fc1_b", rng.standard_normal(4))]
    variables += _tl_batch_norm(rng, 4) if bn else []
    return variables + [("fc_final_W", rng.standard_normal((4, 20))), ("fc_final_b", rng.standard_normal(20))]


def _tl_batch_norm(rng, width):
    return [(name, rng.standard_normal(width)) for name in ("beta", "gamma", "moving_mean", "moving_variance")]


def print_all_vars(variables, path: Path) -> None:
    """model.print_all_vars: each variable's [:, :, j, i] (conv) or [:, i] (fc) slices in turn."""
    parts = []
    for _, var in variables:
        if var.ndim == 4:
            parts += [var[:, :, j, i].reshape(-1) for i in range(var.shape[3]) for j in range(var.shape[2])]
        elif var.ndim == 2:
            parts += [var[:, i] for i in range(var.shape[1])]
        else:
            parts.append(var.reshape(-1))
    np.concatenate(parts).astype(np.float64).tofile(path)


def write_nws_network(folder: Path, seed: int, bn: bool = True, evaluations: int = 25) -> list:
    """One network's output folder as classifier.py leaves it; returns its 20 variable lists."""
    rng = np.random.default_rng(seed)
    (folder / "weights").mkdir(parents=True)
    snapshots = [nws_tf_variables(rng, bn) for _ in range(20)]
    for k, variables in enumerate(snapshots, start=1):
        print_all_vars(variables, folder / "weights" / f"{k:03d}.bin")
    errors = np.zeros((evaluations, 5))
    errors[:, 0] = np.arange(evaluations) * 10  # the step of each per-epoch evaluation
    errors[:, 1:] = rng.uniform(0, 100, (evaluations, 4))
    errors.tofile(folder / "error.bin")
    np.array([evaluations, (evaluations - 1) * 10, evaluations - 1, 12.5]).tofile(folder / "stat.bin")
    return snapshots


def nws_sizes(bn: bool = True) -> tuple[int, int]:
    """(weightn_conv, weightn_fc) of NWS_ARCH."""
    sizes = [v.size for _, v in nws_tf_variables(np.random.default_rng(0), bn)]
    n_conv = 3 * 2 + (3 * 4 if bn else 0)  # variables of the conv part
    return sum(sizes[:n_conv]), sum(sizes[n_conv:])


def make_nws_source(root: Path, n: int = 3) -> dict:
    """A CSV of n networks (relative paths) and their folders; returns {row: snapshots}."""
    root.mkdir(parents=True, exist_ok=True)
    written, n_conv, n_fc = {}, *nws_sizes()
    with open(root / "nws_main_train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NWS_COLUMNS)
        for i in range(n):
            written[i] = write_nws_network(root / f"{i + 1:04d}", seed=i)
            writer.writerow(["mnist", 0.001 * (i + 1), 64, True, i % 2, i % 3, i % 4, i % 4,
                             *NWS_ARCH.values(), n_conv, n_fc, f"{i + 1:04d}"])  # a folder named like a number
    return written


class ConvNetSmall(nn.Module):
    """The Model Zoos CNN as ``def_net.CNN`` builds it: conv 8·5×5, pool, nlin, [dropout],
    conv 6·5×5, pool, nlin, [dropout], conv 4·2×2, nlin, flatten, linear 36→20, nlin,
    [dropout], linear 20→10, in a ``module_list`` (indices 0,3,6,9,11; with dropout
    0,4,8,11,14). Their 3-channel zoos (CIFAR-10, STL-10 CNN-s) feed it 28×28 images."""

    def __init__(self, nlin=nn.Tanh, dropout: float = 0.0, channels_in: int = 1):
        super().__init__()
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.module_list = nn.ModuleList([
            nn.Conv2d(channels_in, 8, 5), nn.MaxPool2d(2, 2), nlin(), *drop,
            nn.Conv2d(8, 6, 5), nn.MaxPool2d(2, 2), nlin(), *[nn.Dropout(dropout) for _ in drop],
            nn.Conv2d(6, 4, 2), nlin(), nn.Flatten(), nn.Linear(36, 20), nlin(), *[nn.Dropout(dropout) for _ in drop],
            nn.Linear(20, 10)])

    def forward(self, x):
        for module in self.module_list:
            x = module(x)
        return x


def write_modelzoos_network(folder: Path, seed: int, epochs=(0, 1, 2), nlin: str = "tanh") -> list[dict]:
    """One Ray Tune trial folder; returns the state dicts written, by checkpoint."""
    torch.manual_seed(seed)
    model = ConvNetSmall(NONLINEARITIES[nlin])
    folder.mkdir(parents=True)
    params = {"model::type": "CNN", "model::channels_in": 1, "model::o_dim": 10, "model::nlin": nlin,
              "model::dropout": 0.0, "model::init_type": "kaiming_uniform", "optim::optimizer": "adam",
              "optim::lr": 1e-3, "optim::wd": 0.0, "training::batchsize": 64, "seed": seed}
    (folder / "params.json").write_text(json.dumps(params))
    states, lines = [], []
    for epoch in epochs:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        (folder / f"checkpoint_{epoch:06d}").mkdir()
        torch.save(state, folder / f"checkpoint_{epoch:06d}" / "checkpoints")
        states.append(state)
        lines.append(json.dumps({"epoch": epoch, "training_iteration": epoch, "train_acc": 0.5 + epoch / 10,
                                 "test_acc": 0.4 + epoch / 10, "train_loss": 1.0 / (epoch + 1),
                                 "test_loss": 1.1 / (epoch + 1)}))
    (folder / "result.json").write_text("\n".join(lines) + "\n")
    return states


def write_torch_network(folder: Path, seed: int, *, config: dict | None, wrapped: bool = False) -> list[dict]:
    """A folder of epoch_<n>.pt files (an MLP for the digits) and metadata.json."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    folder.mkdir(parents=True)
    states, metrics = [], {}
    for epoch in (0, 5, 10):
        state = {k: v + 0.1 * epoch for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "epoch": epoch} if wrapped else state, folder / f"epoch_{epoch}.pt")
        states.append(state)
        if epoch:
            metrics[str(epoch)] = {"train_acc": 0.8, "test_acc": 0.7 + epoch / 100, "step": epoch * 10}
    metadata = {"hyperparameters": {"lr": 0.01 * (seed + 1), "optimizer": "sgd", "dataset": "digits"},
                "metrics": metrics}
    if config:
        metadata["config"] = config
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return states


NONLINEARITIES = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "leakyrelu": nn.LeakyReLU,
                  "sigmoid": nn.Sigmoid}


def write_ray_trial(folder: Path, seed: int, *, nlin: str, dropout: float = 0.0, channels_in: int = 1,
                    epochs: int = 3) -> list[dict]:
    """A trial folder as their NN_tune_trainable under Ray Tune leaves it: params.json; a
    result.json line per training_iteration from 0 (the evaluation before training) with
    Ray's ``config`` object and no ``epoch`` key; checkpoint_<iteration, 6 digits>/checkpoints
    after every iteration. Returns the state dicts by iteration."""
    torch.manual_seed(seed)
    model = ConvNetSmall(NONLINEARITIES[nlin], dropout, channels_in)
    folder.mkdir(parents=True)
    params = {"model::type": "CNN", "model::channels_in": channels_in, "model::o_dim": 10, "model::nlin": nlin,
              "model::dropout": dropout, "model::init_type": "kaiming_uniform", "model::use_bias": False,
              "optim::optimizer": "rms_prop", "optim::lr": 1e-4, "optim::wd": 1e-2, "optim::momentum": 0.9,
              "training::batchsize": 10, "training::epochs_train": epochs, "seed": seed, "cuda": False}
    (folder / "params.json").write_text(json.dumps(params))
    states, lines = [], []
    for iteration in range(epochs):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        (folder / f"checkpoint_{iteration:06d}").mkdir()
        torch.save(states[-1], folder / f"checkpoint_{iteration:06d}" / "checkpoints")
        lines.append(json.dumps({"train_loss": 2.0 - iteration / 10, "train_acc": 0.3 + iteration / 10,
                                 "test_loss": 2.1 - iteration / 10, "test_acc": 0.25 + iteration / 10,
                                 "time_this_iter_s": 1.5, "done": False, "training_iteration": iteration,
                                 "trial_id": f"{seed:05d}", "config": params}))
    (folder / "result.json").write_text("\n".join(lines) + "\n")
    return states


MLP_CONFIG = {"architecture": "mlp", "dataset": "digits", "hidden_layers": 1, "hidden_width": 16,
              "activation": "relu"}


# The Small CNN Zoo (Unterthiner et al. 2020), from its README and train_network.py: 3 Keras
# Conv2D(16, 3, strides=2) layers (valid padding, activation inside), global average
# pooling and Dense(10) = 4,970 parameters; checkpoints at epochs 0, 1, 2, 3, 20, 40, 60, 80, 86.
SMALL_CNN_ZOO_VARIABLES = [("sequential/conv2d/kernel:0", (3, 3, 1, 16)), ("sequential/conv2d/bias:0", (16,)),
                           ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)), ("sequential/conv2d_1/bias:0", (16,)),
                           ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)), ("sequential/conv2d_2/bias:0", (16,)),
                           ("sequential/dense/kernel:0", (16, 10)), ("sequential/dense/bias:0", (10,))]
SMALL_CNN_ZOO_STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)


def write_small_cnn_zoo(folder: Path, dataset: str, n_networks: int, seed: int = 0, steps=SMALL_CNN_ZOO_STEPS,
                        activations=("relu", "tanh")) -> tuple[np.ndarray, "pd.DataFrame"]:
    """One dataset folder of the released zoo: weights.npy (float32, one row per checkpoint,
    each variable flattened in C order, in layout.csv's order), metrics.csv.gz with the
    README's columns, layout.csv (varname, start_idx, end_idx, shape) as pandas writes it."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows, metrics = [], []
    for network in range(n_networks):
        activation = activations[network % len(activations)]
        for step in steps:
            rows.append(np.concatenate([rng.normal(scale=0.3, size=shape).ravel()
                                        for _, shape in SMALL_CNN_ZOO_VARIABLES]).astype(np.float32))
            metrics.append({"config.activation": activation, "config.b_init": "zero", "config.dataset": dataset,
                            "config.dnn_architecture": "cnn", "config.dropout": 0.05 * network,
                            "config.epochs": 86, "config.epochs_between_checkpoints": 20,
                            "config.init_std": 0.05, "config.l2reg": 1e-4, "config.learning_rate": 0.01 * (network + 1),
                            "config.num_layers": 3, "config.num_units": 16, "config.optimizer": "adam",
                            "config.random_seed": 42, "config.train_fraction": 0.5, "config.w_init": "he_normal",
                            "modeldir": f"/tmp/zoo/{dataset}/run_{network:05d}", "step": step,
                            "test_accuracy": 0.1 + step / 100, "test_loss": 2.3 - step / 50,
                            "train_accuracy": 0.12 + step / 100, "train_loss": 2.2 - step / 50})
    order = rng.permutation(len(rows))  # the released rows are not grouped by network
    weights = np.stack(rows)[order]
    table = pd.DataFrame(metrics).iloc[order].reset_index(drop=True)
    np.save(folder / "weights.npy", weights)
    table.to_csv(folder / "metrics.csv.gz", index=False, compression="gzip")
    offsets = np.cumsum([0] + [int(np.prod(shape)) for _, shape in SMALL_CNN_ZOO_VARIABLES])
    pd.DataFrame({"varname": [name for name, _ in SMALL_CNN_ZOO_VARIABLES], "start_idx": offsets[:-1],
                  "end_idx": offsets[1:], "shape": [str(shape) for _, shape in SMALL_CNN_ZOO_VARIABLES]}
                 ).to_csv(folder / "layout.csv")
    return weights, table


def keras_cnn_forward(row: np.ndarray, images_nhwc: np.ndarray, activation: str) -> np.ndarray:
    """Their network's function, from Keras semantics alone: Conv2D(valid, stride 2) with an
    [h, w, in, out] kernel, activation, global average pooling, Dense with an [in, out] kernel."""
    act = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}[activation]
    values, x = {}, images_nhwc.astype(np.float64)
    offset = 0
    for name, shape in SMALL_CNN_ZOO_VARIABLES:
        size = int(np.prod(shape))
        values[name] = row[offset:offset + size].astype(np.float64).reshape(shape)
        offset += size
    for layer in ("conv2d", "conv2d_1", "conv2d_2"):
        kernel, bias = values[f"sequential/{layer}/kernel:0"], values[f"sequential/{layer}/bias:0"]
        side = (x.shape[1] - 3) // 2 + 1
        out = np.zeros((x.shape[0], side, side, kernel.shape[3]))
        for i in range(side):
            for j in range(side):
                patch = x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
                out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
        x = act(out + bias)
    pooled = x.mean(axis=(1, 2))
    return pooled @ values["sequential/dense/kernel:0"] + values["sequential/dense/bias:0"]
