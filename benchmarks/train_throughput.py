"""Training throughput: the vectorised fleet trainer against per-model baselines.

What it measures
    Training samples processed per second (M models x epochs x n_train / wall seconds)
    when M small models of one architecture are trained on one dataset, three ways,
    in the same process and on the same task data and model builder:

    A  "dataloader loop": the plain per-model PyTorch loop people write -- DataLoader
       (batch 64, shuffle), a ``torch.optim`` optimizer, forward/backward/step, and one
       test-set evaluation per epoch. Models are trained one after another.
    B  "reference trainer": ``weightzoo.train.single.train_model`` once per model (tensor
       indexing instead of a DataLoader, plus snapshots of the weights and full train and
       test evaluation at initialisation and at each snapshot epoch).
    F  the fleet: ``weightzoo.train.fleet.train_fleet`` on all M configs at once (same
       snapshots and evaluation as B).

Method
    Configs share architecture, dataset, batch size 64 and activation (relu); they differ
    in seed and optimizer (sgd / momentum / adam / rmsprop with their usual learning
    rates); dropout 0, no augmentation. The dataset is loaded once before timing (all
    three read the same in-process cache). There is no untimed warm-up for any of the
    three: the fleet's first call (vmap tracing etc.) is inside its time. Runs go
    A, B, F for each M, so the first M also pays the process's one-time warm-up (a few
    seconds for the fleet). ``--repeats N`` runs A, B, F N times interleaved and keeps
    each one's best time, which excludes warm-up for all three alike and damps noise
    from other load. torch is limited to ``--threads`` (default 2) intra-op threads.

Reading the ratio
    ``F/A`` and ``F/B`` are throughput ratios measured back to back in one process, so
    they are far less sensitive to machine load than the absolute samples/s. A ratio > 1
    means the fleet trains the same M models faster. F does more work than A (snapshots,
    evaluation on train and test), so F/A understates the pure training speed-up. The
    fleet's results are checked (status ok, test accuracy above chance, agreement with
    B, which it should reproduce up to float rounding); a WARNING is printed otherwise,
    so a fast-but-wrong fleet never shows a good ratio silently.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings as pywarnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from weightzoo.core.models import build_model
from weightzoo.core.spec import TrainingSettings
from weightzoo.train.fleet import train_fleet
from weightzoo.train.optim import make_torch_optimizer
from weightzoo.train.single import train_model
from weightzoo.train.tasks import model_task

BATCH_SIZE = 64
OPTIMIZER_LRS = (("sgd", 0.1), ("momentum", 0.02), ("adam", 3e-3), ("rmsprop", 1e-3))


def make_configs(n: int, arch: str, dataset: str) -> list[dict]:
    """n configs differing in seed and optimizer (cycled), everything else shared."""
    return [{"dataset": dataset, "architecture": arch, "seed": 1000 + i, "batch_size": BATCH_SIZE,
             "activation": "relu", "dropout": 0.0, "augmentation": "none",
             "optimizer": OPTIMIZER_LRS[i % 4][0], "lr": OPTIMIZER_LRS[i % 4][1]} for i in range(n)]


def dataloader_loop(configs: list[dict], training: TrainingSettings) -> list[float]:
    """Baseline A: the plain per-model loop; returns each model's final test accuracy."""
    accuracies = []
    for params in configs:
        task = model_task(params, training)
        model = build_model(params, task.input_shape, task.output_size)
        optimizer = make_torch_optimizer(params["optimizer"], model.parameters(), params["lr"], 0.0)
        torch.manual_seed(params["seed"])
        loader = DataLoader(TensorDataset(task.x_train, task.y_train), batch_size=BATCH_SIZE, shuffle=True)
        for _ in range(training.epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(task.x_test).argmax(-1) == task.y_test).float().mean().item()
        accuracies.append(accuracy)
    return accuracies


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def check(name: str, results, chance: float, reference=None) -> list[str]:
    """Warnings for a trainer's results (fleet, or B with reference=None)."""
    warnings = []
    bad = [i for i, r in enumerate(results) if r.status != "ok"]
    if bad:
        warnings.append(f"{name}: {len(bad)} model(s) not ok: {results[bad[0]].message}")
    final = np.array([r.snapshots[-1]["test_acc"] for r in results])
    low = np.flatnonzero(~(final > chance + 0.05))
    if len(low):
        warnings.append(f"{name}: {len(low)} model(s) at or near chance (test acc {final[low].round(3).tolist()})")
    if reference is not None:
        ref = np.array([r.snapshots[-1]["test_acc"] for r in reference])
        gap = float(np.nanmax(np.abs(final - ref)))
        dw = max(float(np.nanmax(np.abs(a.weights[-1] - b.weights[-1]))) for a, b in zip(results, reference))
        print(f"  check {name} vs reference: max |test acc diff| {gap:.4f}, max |final weight diff| {dw:.2e}")
        if gap > 0.02:
            warnings.append(f"{name}: test accuracy differs from the reference trainer by up to {gap:.3f}")
    return warnings


def run_group(m: int, args, training: TrainingSettings, chance: float, n_train: int) -> dict:
    configs = make_configs(m, args.arch, args.dataset)
    sec_a = sec_b = sec_f = float("inf")
    for _ in range(args.repeats):  # interleaved A, B, F; best of N when --repeats > 1
        acc_a, t = timed(dataloader_loop, configs, training)
        sec_a = min(sec_a, t)
        res_b, t = timed(lambda: [train_model(c, training) for c in configs])
        sec_b = min(sec_b, t)
        res_f, t = timed(train_fleet, configs, training)
        sec_f = min(sec_f, t)
    warnings = []
    if min(acc_a) <= chance + 0.05:
        warnings.append(f"baseline A: a model at or near chance (test acc {min(acc_a):.3f})")
    warnings += check("reference", res_b, chance) + check("fleet", res_f, chance, reference=res_b)
    for w in warnings:
        print("  WARNING:", w)
    samples = m * training.epochs * n_train
    row = {"models": m, "samples": samples, "seconds": {"A": sec_a, "B": sec_b, "fleet": sec_f},
           "samples_per_s": {"A": samples / sec_a, "B": samples / sec_b, "fleet": samples / sec_f},
           "fleet_over_A": sec_a / sec_f, "fleet_over_B": sec_b / sec_f,
           "mean_test_acc": {"A": float(np.mean(acc_a)),
                             "B": float(np.mean([r.snapshots[-1]["test_acc"] for r in res_b])),
                             "fleet": float(np.mean([r.snapshots[-1]["test_acc"] for r in res_f]))},
           "warnings": warnings}
    print(f"  M={m}: A {sec_a:.1f}s, B {sec_b:.1f}s, fleet {sec_f:.1f}s")
    return row


def profile_fleet(m: int, args, training: TrainingSettings) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_fleet(make_configs(m, args.arch, args.dataset), training)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="8,16", help="comma-separated group sizes M")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--arch", default="small-cnn", choices=("small-cnn", "nws-cnn", "mlp"))
    parser.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run A, B, fleet N times interleaved and keep each one's best time (N > 1 "
                             "excludes first-call warm-up for all three alike)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops of the fleet at the largest M")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.models.split(",") if s.strip()]

    torch.set_num_threads(args.threads)
    pywarnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")  # train_model's float(loss)
    training = TrainingSettings(epochs=args.epochs, snapshot_epochs=(args.epochs,))
    task = model_task(make_configs(1, args.arch, args.dataset)[0], training)  # load data once, untimed
    n_train, chance = len(task.x_train), 1.0 / task.output_size
    n_params = sum(p.numel() for p in build_model(make_configs(1, args.arch, args.dataset)[0],
                                                  task.input_shape, task.output_size).parameters())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}")
    print(f"{args.arch} ({n_params} params) on {args.dataset} (n_train {n_train}), batch {BATCH_SIZE}, "
          f"epochs {args.epochs}, M in {sizes}, repeats {args.repeats}")

    rows = [run_group(m, args, training, chance, n_train) for m in sizes]

    print(f"\n{'M':>4} {'A samples/s':>12} {'B samples/s':>12} {'fleet samples/s':>16} {'fleet/A':>8} {'fleet/B':>8}  "
          f"mean test acc A/B/fleet")
    for r in rows:
        s, acc = r["samples_per_s"], r["mean_test_acc"]
        print(f"{r['models']:>4} {s['A']:>12,.0f} {s['B']:>12,.0f} {s['fleet']:>16,.0f} {r['fleet_over_A']:>7.2f}x "
              f"{r['fleet_over_B']:>7.2f}x  {acc['A']:.3f}/{acc['B']:.3f}/{acc['fleet']:.3f}"
              f"{'  (WARNINGS)' if r['warnings'] else ''}")

    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats, "arch": args.arch,
           "dataset": args.dataset, "n_params": n_params, "n_train": n_train, "epochs": args.epochs,
           "batch_size": BATCH_SIZE, "rows": rows}
    if args.profile:
        table = profile_fleet(max(sizes), args, training)
        print(f"\nWhere the fleet's time goes (M={max(sizes)}, top 8 ops by self CPU time, profiler on):\n{table}")
        out["profile"] = table
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
