"""Train the invariant network on some networks of a zoo and predict a target for others.

:func:`fit_predict` is the entry point the evaluation protocol calls per fold: it selects the
train and test networks' snapshots, standardises each tensor with statistics of the train
samples, trains an :class:`~weightzoo.analysis.nfn.layers.InvariantNetwork` and returns one
prediction per test sample. Weights are read only through the selection API, streamed in
bounded batches (:meth:`weightzoo.io.selection.Selection.torch_batches`), so memory does not
grow with the zoo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from weightzoo.analysis.meta_classifier import LOG_SCALE
from weightzoo.analysis.nfn.layers import InvariantNetwork
from weightzoo.analysis.nfn.structure import NetworkStructure
from weightzoo.core.labels import is_categorical
from weightzoo.errors import InputError


@dataclass(frozen=True)
class Settings:
    """Training settings of :func:`fit_predict` (defaults train in about a minute on the demo zoo)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 16
    depth: int = 2
    hidden: int = 64
    dropout: float = 0.1
    threads: int | None = 1  # torch threads while fitting (restored after); None leaves them alone


@dataclass(frozen=True)
class Target:
    """A target column encoded for training: class codes, or standardised (log) values."""

    name: str
    classes: tuple | None  # None for a continuous target
    center: float = 0.0
    spread: float = 1.0

    @property
    def n_outputs(self) -> int:
        """Logits per class, or one regression output."""
        return len(self.classes) if self.classes is not None else 1

    def encode(self, values: pd.Series) -> torch.Tensor:
        """int64 codes (-1 for a class unknown to training) or float32 standardised values (NaN kept)."""
        if self.classes is not None:
            codes = {value: code for code, value in enumerate(self.classes)}
            return torch.tensor([codes.get(value, -1) for value in values], dtype=torch.int64)
        return torch.from_numpy(((_scaled(self.name, values) - self.center) / self.spread).astype(np.float32))

    def decode(self, outputs: torch.Tensor) -> list:
        """Network outputs → class labels, or values on the target's own scale."""
        if self.classes is not None:
            return [self.classes[code] for code in outputs.argmax(dim=1).tolist()]
        values = outputs[:, 0].double().numpy() * self.spread + self.center
        return list(10 ** values if self.name in LOG_SCALE else values)


def fit_predict(zoo, train_ids, test_ids, target: str, *, snapshots, seed: int = 0, progress=None,
                settings: Settings = Settings()) -> pd.DataFrame:
    """Train on the snapshots ``snapshots`` of the networks ``train_ids`` to predict ``target``;
    return a DataFrame (``model_id``, ``k``, ``prediction``) with one row per selected
    snapshot of ``test_ids``: a class label for a categorical target
    (:func:`weightzoo.core.labels.is_categorical`), else a float. Deterministic for ``seed``.

    Raises InputError for overlapping or empty id lists, a selection spanning several layouts,
    a layout that is not a chain of conv/linear layers, or a target it cannot learn (unknown
    column, a single class, no values).
    """
    train_ids, test_ids = list(train_ids), list(test_ids)
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise InputError(f"model ids on both sides of the split: {overlap[:5]}{' ...' if len(overlap) > 5 else ''}")
    train = zoo.select(snapshots=snapshots, model_ids=train_ids)
    test = zoo.select(snapshots=snapshots, model_ids=test_ids)
    for name, selection in (("train", train), ("test", test)):
        if not len(selection):
            raise InputError(f"the {name} networks have no selected snapshots ({len(selection.models)} networks "
                             f"with status ok among {len(set(train_ids if name == 'train' else test_ids))} ids)")
    structure = NetworkStructure.of(zoo.layout(_single_layout(train, test)))
    encoded = _target(train, test, target)
    threads = torch.get_num_threads()
    try:
        # The layers' matrices are tiny: more threads mostly wait on each other, and on a
        # loaded machine (other jobs, parallel folds) OpenMP spinning made steps 25x slower.
        torch.set_num_threads(settings.threads or threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = InvariantNetwork(structure, encoded.n_outputs, width=settings.width, depth=settings.depth,
                                   hidden=settings.hidden, dropout=settings.dropout)
            net.shift[:], net.scale[:] = _standardisation(train, structure)
            _train(net, train, encoded, settings, seed, progress)
        return _predict(net.eval(), test, encoded)
    finally:
        torch.set_num_threads(threads)


def _single_layout(train, test) -> str:
    """The one layout of both selections, or InputError naming each layout and its networks."""
    models = pd.concat([train.models.assign(side="train"), test.models.assign(side="test")])
    layouts = models.groupby("layout_id")["side"].value_counts().unstack(fill_value=0)
    if len(layouts) > 1:
        counts = "; ".join(f"{layout_id}: {row.get('train', 0)} train, {row.get('test', 0)} test networks"
                           for layout_id, row in layouts.iterrows())
        raise InputError(f"the neural functional reads one layout at a time, but the selection spans "
                         f"{len(layouts)} ({counts}); fit each layout on its own")
    return str(layouts.index[0])


def _target(train, test, name: str) -> Target:
    """The target's encoding, learned from the train samples; the kind decided on both sides."""
    train.labels(name)  # InputError naming the columns when there is no such column
    values = train.rows[name]
    if is_categorical(pd.concat([values, test.rows[name]], ignore_index=True)):
        if values.isna().any():
            raise InputError(f"target {name!r} is null for {int(values.isna().sum())} train samples")
        classes = tuple(sorted(pd.unique(values).tolist()))
        if len(classes) < 2:
            raise InputError(f"target {name!r} has a single class {list(classes)} in the train networks; "
                             f"nothing to learn")
        return Target(name, classes)
    scaled = _scaled(name, values)
    known = scaled[np.isfinite(scaled)]
    if not known.size:
        raise InputError(f"target {name!r} has no finite value in the train samples")
    spread = float(known.std())
    return Target(name, None, float(known.mean()), spread if spread > 0 else 1.0)


def _scaled(name: str, values: pd.Series) -> np.ndarray:
    """Float values, log10 for the log-scale hyperparameters (learning rate, weight decay)."""
    values = values.to_numpy(np.float64, na_value=np.nan)
    if name in LOG_SCALE:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(values)
    return values


def _standardisation(train, structure: NetworkStructure) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tensor of the layout, the mean and standard deviation of its values over the train
    samples, spread over the tensor's flat positions (a tensor of constants gets scale 1)."""
    owner = structure.tensor_of_position
    n_tensors = len(structure.layout.tensors)
    count, total, squares = np.zeros(n_tensors), np.zeros(n_tensors), np.zeros(n_tensors)
    for _, _, weights in train.iter_models():
        values = weights.astype(np.float64)
        count += np.bincount(owner, minlength=n_tensors) * len(values)
        total += np.bincount(owner, values.sum(axis=0), minlength=n_tensors)
        squares += np.bincount(owner, (values ** 2).sum(axis=0), minlength=n_tensors)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    std = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return torch.from_numpy(mean[owner]).float(), torch.from_numpy(std[owner]).float()


def _train(net: InvariantNetwork, train, target: Target, settings: Settings, seed: int, progress) -> None:
    """Adam with a cosine learning-rate decay over ``settings.epochs`` passes of shuffled batches."""
    labels = target.encode(train.rows[target.name])
    batches = train.torch_batches(settings.batch_size, seed=seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * len(batches))
    for epoch in range(1, settings.epochs + 1):
        net.train()
        losses = []
        for batch in batches:
            loss = _loss(net(batch["weights"]), labels[batch["index"]], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        if progress:
            progress(f"nfn {target.name}: epoch {epoch}/{settings.epochs} loss {np.mean(losses):.4f}")


def _loss(outputs: torch.Tensor, labels: torch.Tensor, target: Target) -> torch.Tensor:
    if target.classes is not None:
        return F.cross_entropy(outputs, labels)
    known = torch.isfinite(labels)  # a NaN target (a diverged metric) teaches nothing
    if not known.any():
        return outputs.sum() * 0.0
    return F.mse_loss(outputs[known, 0], labels[known])


@torch.no_grad()
def _predict(net: InvariantNetwork, test, target: Target, batch_size: int = 256) -> pd.DataFrame:
    """One prediction per test sample, in the order of ``test.rows``."""
    predictions = [None] * len(test)
    for batch in test.torch_batches(batch_size, shuffle=False):
        for index, value in zip(batch["index"].tolist(), target.decode(net(batch["weights"]))):
            predictions[index] = value
    return pd.DataFrame({"model_id": test.rows["model_id"].to_numpy(), "k": test.rows["k"].to_numpy(),
                         "prediction": predictions})
