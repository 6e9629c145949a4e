"""New networks sampled from a trained SANE autoencoder, evaluated and optionally published.

Sampling follows SANE's anchor-based scheme: the per-token latents [T, latent] of the
``train`` split's last snapshots (the anchors) are flattened to one vector per network,
and a Gaussian kernel density over these vectors is sampled. The kernel is diagonal: a
draw picks an anchor uniformly and adds Gaussian noise whose per-dimension standard
deviation is ``bandwidth`` times that dimension's standard deviation across anchors.
(sklearn's ``KernelDensity.sample`` is the same with one isotropic bandwidth; the diagonal
form keeps latent dimensions of very different spread on an equal footing.) Draws are
decoded, de-standardised with the training run's layer statistics and detokenised into
flat vectors of the run's layout.

Evaluation rebuilds runnable models from a reference config (the most common config of
the layout's train models) and measures test loss/accuracy on the reference model's own
task, next to the same number of randomly initialised networks and the anchors' own
stored weights. With ``finetune_epochs`` > 0, every sampled and every random network is
also trained that many epochs on the reference task with the reference config's optimiser
and batch size (SANE's comparison: a good starting point should stay ahead of a random one
after the same short training); the ``*_ft`` columns hold the results.

Publishing stages the samples as ok models of the same zoo (fingerprints from the
training result path, the index and the weights) and publishes a new version extending
the latest one.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from weightzoo.analysis.reinit import _test_data
from weightzoo.analysis.sane.embed import decode_latents, token_latents
from weightzoo.analysis.cache import cached_result
from weightzoo.analysis.results import StudyResult
from weightzoo.analysis.sane.study import load_trained, options_with_defaults, run_sane_training, trained_only
from weightzoo.analysis.token_stats import denormalize_tokens, load_layer_statistics, normalize_tokens
from weightzoo.core.fingerprint import fingerprint
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import build_model, flat_to_module
from weightzoo.core.tokens import tokenizer_for
from weightzoo.io.publish import PublishRequest, publish_version
from weightzoo.io.records import StagedRecord
from weightzoo.io.staging import stage_model
from weightzoo.train.evaluate import evaluate_model
from weightzoo.train.single import finetune_model

DEFAULT_BANDWIDTH = 0.1  # kernel std as a fraction of each latent dimension's std across anchors
SAMPLER_VERSION = "weightzoo-sane-sample-1"  # the producer recorded with every sampled network
KINDS = ("sampled", "random", "anchor")
SAMPLE_COLUMNS = ("kind", "index", "model_id", "reference_model_id", "test_loss", "test_acc", "acc_recorded",
                  "finetune_epochs", "test_loss_ft", "test_acc_ft")


def anchor_selection(zoo, layout_id: str):
    """The anchors as a selection: the ok train-split models of ``layout_id`` that were
    trained, not generated, at their last snapshot (InputError when there are none)."""
    selection = zoo.select(trained_only(zoo), snapshots="last", split="train", layout_id=layout_id)
    selection.require_samples()
    return selection


def anchor_models(zoo, layout_id: str) -> pd.DataFrame:
    """The anchors' rows of the models table (see :func:`anchor_selection`), sorted by model_id."""
    return anchor_selection(zoo, layout_id).models.sort_values("model_id").reset_index(drop=True)


def anchor_weights(zoo, layout_id: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The anchors (sorted by model_id) and their last snapshots as flat vectors [n_anchors, n_params]."""
    selection = anchor_selection(zoo, layout_id)
    vectors = {model.model_id: weights[0] for model, _, weights in selection.iter_models()}
    anchors = selection.models.sort_values("model_id").reset_index(drop=True)
    return anchors, np.stack([vectors[model_id] for model_id in anchors["model_id"]])


def training_options(training_result) -> dict:
    """The full options a SANE training result was made with (its ``parameters.json``)."""
    return json.loads((Path(training_result.path) / "parameters.json").read_text())


def draw_latents(anchor_latents: np.ndarray, n: int, *, seed: int = 0, bandwidth: float | None = None) -> np.ndarray:
    """``n`` draws from the diagonal Gaussian KDE over the flattened anchor latents.

    ``anchor_latents`` is [n_anchors, T, latent]; the draws have shape [n, T, latent].
    """
    factor = DEFAULT_BANDWIDTH if bandwidth is None else float(bandwidth)
    if factor < 0:
        raise ValueError(f"bandwidth must be >= 0, got {bandwidth}")
    flat = anchor_latents.reshape(len(anchor_latents), -1).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(flat), size=n)
    noise = rng.standard_normal((n, flat.shape[1])) * flat.std(axis=0) * factor
    return (flat[picks] + noise).reshape(n, *anchor_latents.shape[1:]).astype(np.float32)


def sample_networks(zoo, training_result, n: int, *, seed: int = 0, bandwidth: float | None = None) -> np.ndarray:
    """``n`` new flat weight vectors [n, n_params] in the layout of ``training_result`` (a SANE
    training :class:`~weightzoo.analysis.results.StudyResult`)."""
    options = training_options(training_result)
    layout_id = training_result.details["layout_id"]
    tokenizer = tokenizer_for(zoo.layout(layout_id), int(options["token_size"]), options.get("bn_tokens") or "append")
    window = min(int(options["window"]), tokenizer.n_tokens)
    stats = load_layer_statistics(Path(training_result.path) / "layer_stats.parquet")
    model, _ = load_trained(training_result.path)
    _, flats = anchor_weights(zoo, layout_id)
    tokens = normalize_tokens(tokenizer.tokenize(flats), stats, tokenizer).astype(np.float32)
    latents = token_latents(model, tokens, tokenizer.mask, tokenizer.positions, window=window)
    drawn = draw_latents(latents, n, seed=seed, bandwidth=bandwidth)
    decoded = decode_latents(model, drawn, tokenizer.positions, window=window, mask=tokenizer.mask)
    return np.asarray(tokenizer.detokenize(denormalize_tokens(decoded, stats, tokenizer)), dtype=np.float32)


def reference_model(zoo, layout_id: str, reference_model_id: str | None = None):
    """The models-table row whose config builds the samples: the given one, else the first
    (by model_id) train model having the most common config of the layout's train models."""
    if reference_model_id is not None:
        models = zoo.models.set_index("model_id", drop=False)
        if reference_model_id not in models.index:
            raise ValueError(f"unknown reference model {reference_model_id!r} in {zoo.version}")
        row = models.loc[reference_model_id]
        if row["layout_id"] != layout_id:
            raise ValueError(f"reference model {reference_model_id!r} has layout {row['layout_id']}, not {layout_id}")
        return row
    anchors = anchor_models(zoo, layout_id)
    configs = anchors["config_json"].map(lambda text: json.dumps(json.loads(text), sort_keys=True))
    counts = configs.map(configs.value_counts())
    return anchors.loc[counts.idxmax()]  # ties: the first such model by model_id


def random_networks(config: dict, layout: WeightLayout, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` fresh initialisations [n, n_params] of ``config``'s architecture (seeds from ``seed``)."""
    flats = []
    for i in range(n):
        module = build_model({**config, "seed": zlib.crc32(f"sane-random:{seed}:{i}".encode())})
        flats.append(layout.named_as(module).flatten(module.state_dict()))
    return np.stack(flats).astype(np.float32)


def evaluate_samples(zoo, layout_id: str, flats, *, reference_model_id: str | None = None,
                     seed: int = 0, finetune_epochs: int = 0) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Test loss/accuracy of sampled, randomly initialised and anchor networks, and the
    sampled networks' weights after fine-tuning (None without fine-tuning).

    Columns: kind ("sampled", "random", "anchor"), index, model_id (anchors only),
    reference_model_id, test_loss, test_acc, acc_recorded (anchors: the recorded test_acc
    of their last snapshot), finetune_epochs and test_loss_ft / test_acc_ft (after
    fine-tuning; NaN for anchors or without it). Sampled and random networks run on the
    reference model's task; each anchor on its own.
    """
    if finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    flats = np.asarray(flats, dtype=np.float32)
    layout = zoo.layout(layout_id)
    reference = reference_model(zoo, layout_id, reference_model_id)
    config = json.loads(reference["config_json"])
    tasks: dict = {}
    task = _test_data(zoo, reference, config, tasks)
    rows, tuned = [], []
    for kind, group in (("sampled", flats), ("random", random_networks(config, layout, len(flats), seed=seed))):
        for i, flat in enumerate(group):
            module = flat_to_module(config, layout, flat)
            loss, acc = evaluate_model(module, task.x_test, task.y_test, task.task)
            after = (np.nan, np.nan)
            if finetune_epochs:
                finetune_model(module, config, task, finetune_epochs, seed=seed * 100_003 + i)
                after = evaluate_model(module, task.x_test, task.y_test, task.task)
                if kind == "sampled":
                    tuned.append(layout.named_as(module).flatten(module.state_dict()))
            rows.append((kind, i, None, reference["model_id"], loss, acc, np.nan, finetune_epochs, *after))
    rows += _anchor_rows(zoo, layout_id, reference["model_id"], tasks)
    table = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    return table, (np.stack(tuned).astype(np.float32) if tuned else None)


def _anchor_rows(zoo, layout_id: str, reference_id: str, tasks: dict) -> list[tuple]:
    recorded = zoo.snapshots.set_index(["model_id", "k"])["test_acc"]
    layout = zoo.layout(layout_id)
    anchors, flats = anchor_weights(zoo, layout_id)
    rows = []
    for i, (model, flat) in enumerate(zip(anchors.itertuples(), flats)):
        k = int(model.n_snapshots) - 1
        config = json.loads(model.config_json)
        task = _test_data(zoo, model, config, tasks)
        loss, acc = evaluate_model(flat_to_module(config, layout, flat), task.x_test, task.y_test, task.task)
        rows.append(("anchor", i, model.model_id, reference_id, loss, acc, float(recorded.loc[(model.model_id, k)]),
                     0, np.nan, np.nan))
    return rows


def sample_fingerprint(training_path: str, index: int, flat: np.ndarray, tuned: np.ndarray | None = None) -> str:
    """The fingerprint of one sampled network: training result path, index and the weights'
    sha (and those of its fine-tuned weights, when it was fine-tuned)."""
    digest = fingerprint(np.ascontiguousarray(flat, dtype=np.float32).tobytes().hex())
    if tuned is not None:
        digest = fingerprint(digest, "finetuned", np.ascontiguousarray(tuned, dtype=np.float32).tobytes().hex())
    return fingerprint("sane-sample", str(training_path), int(index), digest)


def publish_samples(zoo, flats, table: pd.DataFrame, *, training_path: str, tuned=None, message: str = "") -> str:
    """Stage the sampled networks as ok models of this zoo and publish a version extending
    the latest one (specs copied from this version's manifest; the split settings are the
    latest version's). Snapshot 0 is the decoded network; with ``tuned`` (the weights after
    fine-tuning), snapshot 1 holds them. Returns the new version's name (the latest one
    if nothing was new)."""
    flats = np.asarray(flats, dtype=np.float32)
    tuned = [None] * len(flats) if tuned is None else np.asarray(tuned, dtype=np.float32)
    sampled = table[table["kind"] == "sampled"].sort_values("index")
    if len(sampled) != len(flats):
        raise ValueError(f"{len(flats)} networks but {len(sampled)} 'sampled' rows in the table")
    reference = zoo.models.set_index("model_id", drop=False).loc[sampled["reference_model_id"].iloc[0]]
    layout = zoo.layout(reference["layout_id"])
    fingerprints = [_stage_sample(zoo, layout, reference, training_path, i, (flat, after), row)
                    for i, (flat, after, row) in enumerate(zip(flats, tuned, sampled.itertuples()))]
    return publish_version(zoo.handle, PublishRequest(
        fingerprints=tuple(fingerprints), specs=tuple(zoo.manifest.specs),
        message=message or f"{len(flats)} networks sampled by SANE from {training_path}")).version


def _stage_sample(zoo, layout: WeightLayout, reference, training_path: str, index: int, weights, row) -> str:
    flat, tuned = weights
    fp = sample_fingerprint(training_path, index, flat, tuned)
    config = json.loads(reference["config_json"])
    record = StagedRecord(model_id=f"sane-{fp[:12]}", fingerprint=fp, status="ok",
                          message=f"sampled by SANE ({training_path}, #{index})",
                          hyperparameters={**config, "generated_by": "sane", "sane_result": str(training_path)},
                          config=config, training=json.loads(reference["training_json"] or "{}"),
                          spec_name=reference["spec_name"], layout_id=layout.layout_id, n_params=layout.n_params,
                          code_version=SAMPLER_VERSION)
    snapshots = [{"k": 0, "epoch": 0.0, "step": 0, "train_loss": None, "train_acc": None,
                  "test_loss": float(row.test_loss), "test_acc": float(row.test_acc), "gap": None}]
    if tuned is not None:
        snapshots.append({**snapshots[0], "k": 1, "epoch": float(row.finetune_epochs), "step": None,
                          "test_loss": float(row.test_loss_ft), "test_acc": float(row.test_acc_ft)})
    stacked = flat[None] if tuned is None else np.stack([flat, tuned])
    stage_model(zoo.handle.staging, record, weights=stacked, snapshots=snapshots, layout=layout)
    return fp


def run_sane_sampling(zoo, options: dict | None = None, n: int = 16, *, bandwidth: float | None = None,
                      publish: bool = False, seed: int = 0, finetune_epochs: int = 0, progress=None) -> StudyResult:
    """Train (cached), sample ``n`` networks, evaluate them beside random and anchor networks
    (and, with ``finetune_epochs``, again after fine-tuning sampled and random ones).

    Writes ``samples.npy`` (``samples_finetuned.npy``), ``samples.parquet`` and
    ``samples.png`` under ``analyses/<v>/sane-sample/<key>/`` (cached). The result's rows are
    the mean test accuracy per kind; ``details`` holds the ``training`` path, ``layout_id``,
    ``n``, the ``samples``, ``table`` and ``plot`` paths and the means. With ``publish``, the
    samples are also published as a new version (idempotent: their fingerprints come from
    their weights), whose name is added as ``details["published_version"]``.
    """
    o = options_with_defaults(options)
    parameters = {"training": o, "n": int(n), "sample_seed": int(seed), "bandwidth": bandwidth,
                  "finetune_epochs": int(finetune_epochs)}

    def run(out: Path) -> StudyResult:
        training = run_sane_training(zoo, o, progress)
        layout_id = training.details["layout_id"]
        flats = sample_networks(zoo, training, n, seed=seed, bandwidth=bandwidth)
        if progress:
            progress(f"evaluating {n} sampled and {n} random networks"
                     + (f", fine-tuning each {finetune_epochs} epochs" if finetune_epochs else ""))
        table, tuned = evaluate_samples(zoo, layout_id, flats, seed=seed, finetune_epochs=finetune_epochs)
        np.save(out / "samples.npy", flats)
        if tuned is not None:
            np.save(out / "samples_finetuned.npy", tuned)
        table.to_parquet(out / "samples.parquet", index=False)
        plot_samples(table, out / "samples.png", title=f"SANE samples, {zoo.handle.url} {zoo.version}")
        means, tuned_means = summarise(table), summarise(table, "test_acc_ft")
        rows = [{"kind": kind, "n": int((table["kind"] == kind).sum()), "mean_test_acc": means[kind],
                 **({"mean_test_acc_finetuned": tuned_means[kind]} if finetune_epochs else {})} for kind in KINDS]
        return StudyResult.of_directory("sane-sample", out, headline=_sample_headline(n, means, finetune_epochs),
                                        rows=rows, details={
            "training": training.path, "layout_id": layout_id, "n": int(n), "samples": str(out / "samples.npy"),
            "table": str(out / "samples.parquet"), "plot": str(out / "samples.png"), "mean_test_acc": means,
            "finetune_epochs": int(finetune_epochs), "mean_test_acc_finetuned": tuned_means})

    result = cached_result(zoo, "sane-sample", parameters, run)
    if publish:
        flats = np.load(result.details["samples"])
        table = pd.read_parquet(result.details["table"])
        tuned_path = Path(result.details["samples"]).with_name("samples_finetuned.npy")
        tuned = np.load(tuned_path) if tuned_path.exists() else None
        version = publish_samples(zoo, flats, table, training_path=result.details["training"], tuned=tuned)
        result = result.with_details(f"{result.headline}; published as {zoo.handle}@{version}",
                                     published_version=version)
        if progress:
            progress(f"published {len(flats)} SANE samples as {version}")
    return result


def _sample_headline(n: int, means: dict, finetune_epochs: int) -> str:
    shown = ", ".join(f"{kind} {'n/a' if value is None else f'{value:.3f}'}" for kind, value in means.items())
    tuned = f" (before {finetune_epochs} epochs of fine-tuning)" if finetune_epochs else ""
    return f"{n} networks sampled; mean test accuracy{tuned}: {shown}"


def summarise(table: pd.DataFrame, column: str = "test_acc") -> dict:
    """Mean of ``column`` per kind (None where not finite)."""
    means = table.groupby("kind")[column].mean()
    return {kind: (float(means[kind]) if kind in means and np.isfinite(means[kind]) else None) for kind in KINDS}


def plot_samples(table: pd.DataFrame, path, *, title: str = "") -> None:
    """Test accuracy per kind (and after fine-tuning, where done): a box per kind with the
    networks as points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    kinds = [kind for kind in KINDS if kind in set(table["kind"])]
    values = [table.loc[table["kind"] == kind, "test_acc"].dropna().to_numpy() for kind in kinds]
    tuned = [kind for kind in ("sampled", "random") if table.loc[table["kind"] == kind, "test_acc_ft"].notna().any()]
    epochs = int(table["finetune_epochs"].max()) if tuned else 0
    values += [table.loc[table["kind"] == kind, "test_acc_ft"].dropna().to_numpy() for kind in tuned]
    kinds += [f"{kind}\n+{epochs} ep" for kind in tuned]
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(kinds) + 1), kinds)
    for position, points in enumerate(values, start=1):
        ax.plot(np.full(len(points), position) + np.linspace(-0.1, 0.1, len(points)), points, "o", ms=3, alpha=0.6)
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100)
