"""Model builders: a config (hyperparameter dict) → a torch module, deterministically.

Every architecture is an ``nn.Sequential`` of standard layers plus two small
modules of our own, :class:`Activation` and :class:`Dropout`, whose choice / rate
live in non-persistent buffers. That keeps them out of the state dict (and so out
of the :class:`~weightzoo.core.layout.WeightLayout`) while letting the fleet trainer
give every model of a vectorised group its own activation and dropout rate.

Every block has its Dropout module whatever its rate (rate 0 is an exact identity that
draws no random numbers), so module indices, tensor names and layouts do not depend on
dropout: a dropout grid is one layout, and its models can share a fleet.
"""

from __future__ import annotations

import json

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from weightzoo.errors import InputError

# silu and selu are for imported zoos (Model Zoos, the Small CNN Zoo); specs draw from the first six
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu", "selu")
INITS = ("default", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal",
         "orthogonal", "uniform", "normal")
ARCHITECTURES = ("nws-cnn", "small-cnn", "large-cnn", "mlp", "unterthiner-cnn")

# input shape and output size per dataset, so models can be built without loading data
DATASET_SIGNATURES = {
    "mnist5k": ((1, 28, 28), 10),
    "mnist-idx": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "sinusoid": ((2,), 1),
}

DEFAULTS = {
    "architecture": "nws-cnn", "activation": "relu", "init": "default", "dropout": 0.0,
    "batch_norm": False, "conv_layers": 2, "conv_width": 8, "filter_size": 3, "fc_layers": 1,
    "fc_width": 32, "hidden_layers": 1, "hidden_width": 32, "seed": 0, "frozen_identity_input": False,
}


# Hyperparameters that change how a model trains or what its modules hold, never which modules
# and tensors it has (Activation and Dropout keep their choice in buffers): see structure_key.
NOT_STRUCTURAL = ("seed", "init", "lr", "optimizer", "batch_size", "augmentation", "label_noise", "activation",
                  "dropout")


class ConfigError(InputError):
    """A config that cannot be turned into a model; names the offending key."""


class Activation(nn.Module):
    """An activation chosen by a one-hot buffer, so vmapped fleets can mix activations.

    With a one-hot choice the output equals the chosen function exactly (the other
    terms are multiplied by 0.0 and added).
    """

    def __init__(self, name: str):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown {name!r}; expected one of {ACTIVATIONS}")
        self.register_buffer("choice", activation_one_hot(name), persistent=False)
        self.name = name

    def forward(self, x):
        if not isinstance(self.choice, torch.Tensor) or self.choice.dim() != 1:
            raise RuntimeError("Activation.choice must be a 1-D one-hot tensor")
        if _is_plain(self.choice):
            return _apply_activation(self.name, x)
        names = getattr(self, "active", ACTIVATIONS)
        return sum(self.choice[ACTIVATIONS.index(a)] * _apply_activation(a, x) for a in names)

    def extra_repr(self):
        return self.name


class Dropout(nn.Module):
    """Inverted dropout whose rate is a buffer (per-model under vmap)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout: expected 0 <= p < 1, got {p}")
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x):
        if not self.training or (_is_plain(self.p) and float(self.p) == 0.0):
            return x  # rate 0 draws nothing: a model without dropout trains as it always did
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * keep / (1.0 - self.p)


def activation_one_hot(name: str) -> torch.Tensor:
    """One-hot vector over :data:`ACTIVATIONS`."""
    return F.one_hot(torch.tensor(ACTIVATIONS.index(name)), len(ACTIVATIONS)).float()


def _is_plain(t: torch.Tensor) -> bool:
    # under torch.func transforms buffers are wrapped; plain tensors take the fast path
    return type(t) is torch.Tensor and not torch._C._functorch.is_functorch_wrapped_tensor(t)


def _apply_activation(name: str, x):
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    if name == "silu":
        return F.silu(x)
    if name == "selu":
        return F.selu(x)
    return F.elu(x)


def model_signature(config: Mapping) -> tuple[tuple[int, ...], int]:
    """(input shape, output size) of the model for ``config['dataset']`` (and, for the
    sinusoid, its ``input_dim``: the dimension its 2-D points are embedded in).

    An explicit ``input_shape`` (and ``output_size``) in the config wins: imported networks
    whose task is no dataset of ours (their CIFAR-10 resized to 28×28, grayscale CIFAR-10)
    name their input that way.
    """
    if config.get("input_shape") is not None:
        return _explicit_signature(config)
    dataset = config.get("dataset")
    if dataset not in DATASET_SIGNATURES:
        raise ConfigError(f"dataset: unknown {dataset!r}; expected one of {tuple(DATASET_SIGNATURES)}")
    if dataset == "sinusoid" and config.get("input_dim") is not None:
        return (int(config["input_dim"]),), 1
    return DATASET_SIGNATURES[dataset]


def structure_key(config: Mapping) -> str:
    """Canonical JSON of what decides which modules and tensors ``config``'s model has: configs
    with equal keys build models of one structure (a planner builds one model per key)."""
    key = {name: value for name, value in config.items() if name not in NOT_STRUCTURAL}
    return json.dumps(key, sort_keys=True, default=str)


def _explicit_signature(config: Mapping) -> tuple[tuple[int, ...], int]:
    shape, outputs = config["input_shape"], config.get("output_size")
    if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ConfigError(f"input_shape: expected a list of positive integers, got {shape!r}")
    if outputs is None:
        outputs = DATASET_SIGNATURES.get(config.get("dataset"), (None, None))[1]
    if not isinstance(outputs, int) or isinstance(outputs, bool) or outputs < 1:
        raise ConfigError(f"output_size: expected a positive integer with input_shape, got {outputs!r}")
    return tuple(shape), outputs


def build_model(config: Mapping, input_shape=None, output_size=None) -> nn.Module:
    """Build and initialise the model of ``config`` deterministically from its seed."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    builders = {"nws-cnn": _nws_cnn, "small-cnn": _small_cnn, "large-cnn": _large_cnn, "mlp": _mlp,
                "unterthiner-cnn": _unterthiner_cnn}
    if cfg["architecture"] not in builders:
        raise ConfigError(f"architecture: unknown {cfg['architecture']!r}; expected one of {ARCHITECTURES}")
    if input_shape is None or output_size is None:
        input_shape, output_size = model_signature(cfg)
    if cfg["frozen_identity_input"] and cfg["architecture"] != "mlp":
        raise ConfigError(f"frozen_identity_input: only the mlp architecture has a frozen identity input layer, "
                          f"got architecture {cfg['architecture']!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        model = builders[cfg["architecture"]](cfg, tuple(input_shape), int(output_size))
        initialise(model, cfg["init"])
    return model


def flat_to_module(config: Mapping, layout, flat) -> nn.Module:
    """A module built from ``config`` holding the flat vector ``flat`` of ``layout`` (a
    :class:`weightzoo.core.layout.WeightLayout`), in eval mode; ValueError when the config
    builds a different layout."""
    from weightzoo.core.layout import WeightLayout

    module = build_model(config)
    try:  # a layout stored under older tensor names matches by position (WeightLayout.named_as)
        named = layout.named_as(module)
    except ValueError:
        raise ValueError(f"config builds layout {WeightLayout.from_module(module).layout_id}, "
                         f"not {layout.layout_id}") from None
    module.load_state_dict(named.unflatten(flat), strict=False)
    return module.eval()


def initialise(model: nn.Module, init: str) -> None:
    """Re-initialise conv and linear weights in place (biases to zero) unless ``default``;
    frozen weights (a frozen identity input) keep their value."""
    if init not in INITS:
        raise ConfigError(f"init: unknown {init!r}; expected one of {INITS}")
    if init == "default":
        return
    fns = {
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_,
        "orthogonal": nn.init.orthogonal_,
        "uniform": lambda w: nn.init.uniform_(w, -0.1, 0.1),
        "normal": lambda w: nn.init.normal_(w, 0.0, 0.05),
    }
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if module.weight.requires_grad:
                    fns[init](module.weight)
                if module.bias is not None:
                    module.bias.zero_()


def _block(cfg, layers):
    layers += [Activation(cfg["activation"]), Dropout(cfg["dropout"])]


def _require_image(cfg, input_shape, min_side):
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ConfigError(
            f"architecture: {cfg['architecture']} needs image input of at least {min_side}x{min_side}, "
            f"dataset {cfg.get('dataset')!r} gives {input_shape}")


def _nws_cnn(cfg, input_shape, output_size):
    """Eilertsen et al.'s conv family: conv(+BN)+act(+pool) blocks, then an fc part."""
    _require_image(cfg, input_shape, 4)
    channels, side = input_shape[0], input_shape[1]
    k, width = int(cfg["filter_size"]), int(cfg["conv_width"])
    layers: list[nn.Module] = []
    for _ in range(int(cfg["conv_layers"])):
        layers.append(nn.Conv2d(channels, width, k, padding=k // 2))
        if cfg["batch_norm"]:
            layers.append(nn.BatchNorm2d(width))
        _block(cfg, layers)
        if side >= 4:  # pool while the map is large enough that pooling keeps information
            layers.append(nn.MaxPool2d(2))
            side //= 2
        channels = width
    layers.append(nn.Flatten())
    _dense_stack(cfg, layers, channels * side * side, int(cfg["fc_layers"]), int(cfg["fc_width"]), output_size)
    return nn.Sequential(*layers)


def _small_cnn(cfg, input_shape, output_size):
    """Schürholt et al.'s model-zoo CNN (``CNN`` in their ``def_net.py``): 2,464 parameters
    on 28x28x1 with 10 classes. Dropout follows the first two conv blocks and the hidden
    linear layer (not the third conv), so the modules sit at their ``module_list`` indices
    with dropout: conv 0, 4, 8 and linear 11, 14."""
    _require_image(cfg, input_shape, 28)
    act, rate = cfg["activation"], cfg["dropout"]
    side = ((input_shape[1] - 4) // 2 - 4) // 2 - 1
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 8, 5), nn.MaxPool2d(2), Activation(act), Dropout(rate),
        nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), Activation(act), Dropout(rate),
        nn.Conv2d(6, 4, 2), Activation(act),
        nn.Flatten(), nn.Linear(4 * side * side, 20), Activation(act), Dropout(rate),
        nn.Linear(20, output_size),
    )


def _unterthiner_cnn(cfg, input_shape, output_size):
    """The CNN of the Small CNN Zoo (Unterthiner et al. 2020, ``build_cnn`` in their
    ``train_network.py``): ``conv_layers`` × (3×3 conv of ``conv_width`` filters, stride 2,
    no padding, activation, dropout), global average pooling, one linear layer. With their
    3 layers of 16 units: 4,970 parameters for any input size."""
    _require_image(cfg, input_shape, 8)
    layers: list[nn.Module] = []
    channels, width = input_shape[0], int(cfg["conv_width"])
    for _ in range(int(cfg["conv_layers"])):
        layers.append(nn.Conv2d(channels, width, 3, stride=2))
        _block(cfg, layers)
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, output_size)]
    return nn.Sequential(*layers)


def _large_cnn(cfg, input_shape, output_size):
    """A wider three-block CNN with global average pooling (size-independent head)."""
    _require_image(cfg, input_shape, 8)
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for width in (16, 32, 32):
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if cfg["batch_norm"]:
            layers.append(nn.BatchNorm2d(width))
        _block(cfg, layers)
        layers.append(nn.MaxPool2d(2))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 64)]
    _block(cfg, layers)
    layers.append(nn.Linear(64, output_size))
    return nn.Sequential(*layers)


def _mlp(cfg, input_shape, output_size):
    """A fully connected network over the flattened input; with ``frozen_identity_input`` a
    square first layer whose weight is a frozen identity and whose bias trains (Loukas et al.,
    NeurIPS 2021: that bias's gradient is the gradient with respect to the input)."""
    features = 1
    for s in input_shape:
        features *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    if cfg["frozen_identity_input"]:
        layers += [_frozen_identity(features), Activation(cfg["activation"])]
    _dense_stack(cfg, layers, features, int(cfg["hidden_layers"]), int(cfg["hidden_width"]), output_size)
    return nn.Sequential(*layers)


def _dense_stack(cfg, layers, features: int, depth: int, width: int, output_size: int) -> None:
    """Append ``depth`` hidden linear blocks (+BN, activation, dropout) and the output layer."""
    for _ in range(depth):
        layers.append(nn.Linear(features, width))
        if cfg["batch_norm"]:
            layers.append(nn.BatchNorm1d(width))
        _block(cfg, layers)
        features = width
    layers.append(nn.Linear(features, output_size))


def _frozen_identity(features: int) -> nn.Linear:
    layer = nn.Linear(features, features)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(features))
    layer.weight.requires_grad_(False)
    return layer

