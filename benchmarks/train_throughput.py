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

Models
    ``--arch``/``--dataset`` pick an architecture family and dataset with the family's
    default shape; ``--model`` picks a named one instead: ``demo`` (the demo preset's
    nws-cnn: 2 conv layers of width 8, filter 3, one fc layer of 32, on the 8x8 digits,
    2,050 parameters) or ``nws-scale`` (the largest architecture of the nws-scale preset:
    3 conv layers of width 16 with batch norm, 7,370 parameters, on the digits).

FLOPs and the machine's peak
    FLOPs count the multiply-adds of convolution and linear layers only (2 FLOPs each;
    activations, pooling, batch norm, the loss and the optimizer are left out, so the
    figures are a lower bound on the arithmetic done). A model's MACs per sample come from
    one forward pass with hooks (conv: output elements x in-channels/groups x kernel area;
    linear: out x in features). Forward = 2 x MACs; a training sample = 3 x forward
    (forward, gradient w.r.t. the layer input, gradient w.r.t. the weights), except the
    first layer, whose input needs no gradient (2 x its forward). Each trainer is credited
    with the work it does: A trains every sample and evaluates the test set once per
    epoch; B and the fleet train every sample and evaluate train and test set at every
    snapshot (initialisation included). GFLOP/s = those FLOPs / wall seconds.
    The peak is measured in the same run at the same thread count, before the timed groups
    and after every repeat, as the best of two dense fp32 kernels: ``torch.mm`` of
    2048 x 2048 matrices (MKL) and a 3x3 convolution of 256 channels on 32 x 32 maps in
    channels-last (oneDNN); the fraction of peak is GFLOP/s / the best of all those
    measurements. On this AMD CPU oneDNN's convolution runs about twice as fast as MKL's
    sgemm, so taking only ``torch.mm`` would overstate the fraction. On a busy machine
    the measured peak is itself depressed (a lower bound, so the fraction is an upper bound):
    compare fractions against the best peak seen on the machine, which the JSON keeps.

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
import os
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
DEMO_SHAPE = {"conv_layers": 2, "conv_width": 8, "filter_size": 3, "fc_layers": 1, "fc_width": 32}
MODELS = {  # --model NAME: (architecture, dataset, shape)
    "demo": ("nws-cnn", "digits", DEMO_SHAPE),
    "nws-scale": ("nws-cnn", "digits", {**DEMO_SHAPE, "conv_layers": 3, "conv_width": 16, "batch_norm": True}),
}


def make_configs(n: int, arch: str, dataset: str, shape: dict | None = None) -> list[dict]:
    """n configs differing in seed and optimizer (cycled), everything else shared."""
    return [{"dataset": dataset, "architecture": arch, "seed": 1000 + i, "batch_size": BATCH_SIZE,
             "activation": "relu", "dropout": 0.0, "augmentation": "none", **(shape or {}),
             "optimizer": OPTIMIZER_LRS[i % 4][0], "lr": OPTIMIZER_LRS[i % 4][1]} for i in range(n)]


def flops_per_sample(model: torch.nn.Module, sample: torch.Tensor) -> dict:
    """Forward and training FLOPs of one sample, counted as the module docstring says."""
    macs = []

    def count(layer, _inputs, output):
        if isinstance(layer, torch.nn.Conv2d):
            macs.append(output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1])
        elif isinstance(layer, torch.nn.Linear):
            macs.append(layer.in_features * layer.out_features)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(sample[:1])
    for hook in hooks:
        hook.remove()
    forward = 2 * sum(macs)
    return {"forward": forward, "train": 3 * forward - 2 * macs[0], "macs_by_layer": macs}


def measure_peak(repeats: int = 5) -> dict:
    """Best GFLOP/s of two large dense fp32 kernels at the current thread count."""
    a, b, c = torch.randn(2048, 2048), torch.randn(2048, 2048), torch.empty(2048, 2048)
    x = torch.randn(8, 256, 32, 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3)
    kernels = {"mm_2048": (lambda: torch.mm(a, b, out=c), 2 * 2048 ** 3),
               "conv3x3_256ch": (lambda: F.conv2d(x, w, padding=1), 2 * 8 * 32 * 32 * 256 * 256 * 9)}
    rates = {}
    for name, (kernel, flops) in kernels.items():
        kernel()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(3):
                kernel()
            best = min(best, (time.perf_counter() - started) / 3)
        rates[name] = flops / best / 1e9
    return rates


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
    """fn's result and (wall seconds, process CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (time.perf_counter() - started, time.process_time() - cpu)


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


def run_group(m: int, args, training: TrainingSettings, work: dict, peaks: list[dict]) -> dict:
    """Time A, B and the fleet on M models; measure the peak after every repeat into ``peaks``."""
    chance = work["chance"]
    configs = make_configs(m, args.arch, args.dataset, args.shape)
    best = {"A": (float("inf"), 0.0), "B": (float("inf"), 0.0), "fleet": (float("inf"), 0.0)}
    for _ in range(args.repeats):  # interleaved A, B, F; best of N when --repeats > 1
        acc_a, t = timed(dataloader_loop, configs, training)
        best["A"] = min(best["A"], t)
        res_b, t = timed(lambda: [train_model(c, training) for c in configs])
        best["B"] = min(best["B"], t)
        res_f, t = timed(train_fleet, configs, training)
        best["fleet"] = min(best["fleet"], t)
        peaks.append(measure_peak())  # after every repeat: more chances to catch a quiet moment
    (sec_a, cpu_a), (sec_b, cpu_b), (sec_f, cpu_f) = best["A"], best["B"], best["fleet"]
    warnings = []
    if min(acc_a) <= chance + 0.05:
        warnings.append(f"baseline A: a model at or near chance (test acc {min(acc_a):.3f})")
    warnings += check("reference", res_b, chance) + check("fleet", res_f, chance, reference=res_b)
    for w in warnings:
        print("  WARNING:", w)
    samples = m * training.epochs * work["n_train"]
    flops = {name: m * work[name] for name in ("A", "B", "fleet")}
    seconds = {"A": sec_a, "B": sec_b, "fleet": sec_f}
    gflops = {name: flops[name] / seconds[name] / 1e9 for name in seconds}
    row = {"models": m, "samples": samples, "seconds": seconds, "cpu_seconds": {"A": cpu_a, "B": cpu_b, "fleet": cpu_f},
           "samples_per_s": {"A": samples / sec_a, "B": samples / sec_b, "fleet": samples / sec_f},
           "fleet_over_A": sec_a / sec_f, "fleet_over_B": sec_b / sec_f,
           "gflop": {name: f / 1e9 for name, f in flops.items()}, "gflop_per_s": gflops,
           "mean_test_acc": {"A": float(np.mean(acc_a)),
                             "B": float(np.mean([r.snapshots[-1]["test_acc"] for r in res_b])),
                             "fleet": float(np.mean([r.snapshots[-1]["test_acc"] for r in res_f]))},
           "warnings": warnings}
    print(f"  M={m}: A {sec_a:.1f}s, B {sec_b:.1f}s, fleet {sec_f:.1f}s")
    return row


def profile_fleet(m: int, args, training: TrainingSettings) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_fleet(make_configs(m, args.arch, args.dataset, args.shape), training)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)


def work_per_model(arch: str, dataset: str, shape: dict, training: TrainingSettings) -> dict:
    """Task sizes, parameters and FLOPs of one model's run under A, B and the fleet."""
    config = make_configs(1, arch, dataset, shape)[0]
    task = model_task(config, training)  # loads the data once, untimed
    model = build_model(config, task.input_shape, task.output_size)
    per_sample = flops_per_sample(model, task.x_train)
    n_train, n_test = len(task.x_train), len(task.x_test)
    trained = training.epochs * n_train * per_sample["train"]
    records = 1 + len(training.snapshot_epochs)  # B and the fleet evaluate train and test at each snapshot
    return {"n_train": n_train, "n_test": n_test, "chance": 1.0 / task.output_size,
            "n_params": sum(p.numel() for p in model.parameters()), "flops_per_sample": per_sample,
            "A": trained + training.epochs * n_test * per_sample["forward"],
            "B": trained + records * (n_train + n_test) * per_sample["forward"],
            "fleet": trained + records * (n_train + n_test) * per_sample["forward"]}


def print_table(rows: list[dict], peak: float) -> None:
    print(f"\n{'M':>4} {'A samples/s':>12} {'B samples/s':>12} {'fleet samples/s':>16} {'fleet/A':>8} {'fleet/B':>8}  "
          f"{'GFLOP/s A/B/fleet':>20}  {'% of peak A/B/fleet':>20}  mean test acc A/B/fleet")
    for r in rows:
        s, acc, g = r["samples_per_s"], r["mean_test_acc"], r["gflop_per_s"]
        share = "/".join(f"{100 * g[k] / peak:.1f}" for k in ("A", "B", "fleet"))
        print(f"{r['models']:>4} {s['A']:>12,.0f} {s['B']:>12,.0f} {s['fleet']:>16,.0f} {r['fleet_over_A']:>7.2f}x "
              f"{r['fleet_over_B']:>7.2f}x  {g['A']:>6.2f}/{g['B']:.2f}/{g['fleet']:.2f}  {share:>20}  "
              f"{acc['A']:.3f}/{acc['B']:.3f}/{acc['fleet']:.3f}{'  (WARNINGS)' if r['warnings'] else ''}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="8,16", help="comma-separated group sizes M")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--arch", default="small-cnn", choices=("small-cnn", "nws-cnn", "mlp"))
    parser.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits"))
    parser.add_argument("--model", choices=sorted(MODELS), help="a named architecture and dataset (overrides "
                                                                "--arch and --dataset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run A, B, fleet N times interleaved and keep each one's best time (N > 1 "
                             "excludes first-call warm-up for all three alike)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops of the fleet at the largest M")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.models.split(",") if s.strip()]
    args.shape = {}
    if args.model:
        args.arch, args.dataset, args.shape = MODELS[args.model]

    torch.set_num_threads(args.threads)
    pywarnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")  # train_model's float(loss)
    training = TrainingSettings(epochs=args.epochs, snapshot_epochs=(args.epochs,))
    work = work_per_model(args.arch, args.dataset, args.shape, training)
    load = [os.getloadavg()]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}, "
          f"load average {load[0][0]:.2f} {load[0][1]:.2f} {load[0][2]:.2f}")
    print(f"{args.model or args.arch} ({work['n_params']} params, {work['flops_per_sample']['train'] / 1e3:.1f} kFLOP "
          f"per training sample) on {args.dataset} (n_train {work['n_train']}), batch {BATCH_SIZE}, "
          f"epochs {args.epochs}, M in {sizes}, repeats {args.repeats}")
    peaks = [measure_peak()]
    rows = [run_group(m, args, training, work, peaks) for m in sizes]
    load.append(os.getloadavg())
    peak = max(max(p.values()) for p in peaks)
    print(f"peak (best of {', '.join(peaks[0])}, measured {len(peaks)} times): {peak:.1f} GFLOP/s; "
          f"load average after {load[1][0]:.2f} {load[1][1]:.2f} {load[1][2]:.2f}")
    for r in rows:
        r["fraction_of_peak"] = {name: g / peak for name, g in r["gflop_per_s"].items()}
    print_table(rows, peak)

    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats, "arch": args.arch,
           "dataset": args.dataset, "model": args.model, "shape": args.shape, "n_params": work["n_params"],
           "n_train": work["n_train"], "n_test": work["n_test"], "epochs": args.epochs, "batch_size": BATCH_SIZE,
           "flops_per_sample": work["flops_per_sample"], "peak_gflop_per_s": peak, "peak_measurements": peaks,
           "load_average": {"before": load[0], "after": load[1]}, "rows": rows}
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
