"""torch_batches against torch_loader on a small zoo: the cost of DataLoader worker start-up.

    python benchmarks/loader_startup.py ZOO [--batch-size 4] [--num-workers 2] [--epochs 3]

Prints, for each reader, the seconds of each epoch (the first includes torch_loader's
forkserver worker start-up: a fresh interpreter per worker that imports torch and weightzoo
and opens the zoo; later epochs reuse the persistent workers) and the batches per epoch.
"""

import argparse
import time

import weightzoo


def epochs(make, n: int) -> list[tuple[float, int]]:
    reader, result = make(), []
    for _ in range(n):
        started, count = time.perf_counter(), 0
        for _batch in reader:
            count += 1
        result.append((time.perf_counter() - started, count))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("zoo")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    sel = weightzoo.open_zoo(args.zoo).select()
    print(f"{len(sel)} samples of {len(sel.models)} models, batch size {args.batch_size}")
    for name, make in (("torch_batches", lambda: sel.torch_batches(args.batch_size)),
                       (f"torch_loader(num_workers={args.num_workers})",
                        lambda: sel.torch_loader(args.batch_size, num_workers=args.num_workers))):
        runs = epochs(make, args.epochs)
        print(f"{name:28} " + ", ".join(f"epoch {i + 1}: {s:.2f}s ({n} batches)" for i, (s, n) in enumerate(runs)))


if __name__ == "__main__":  # DataLoader workers start with forkserver: the guard is required
    main()
