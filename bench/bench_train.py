"""Training benchmark: this NumPy network against scikit-learn's MLPClassifier and PyTorch.

Run by ``make bench`` (``python bench/bench_train.py``; ``--help`` for the flags); needs the
``bench`` extra (scikit-learn). PyTorch is used only when ``import torch`` already works: it
is never a dependency.

Every contender trains the same network the same way, read from ``Hyperparameters()``:
4 -> hidden ReLU -> 3 softmax, mean cross-entropy, mini-batch SGD at the defaults' learning
rate, epochs, batch size, momentum and weight decay (0 and 0: plain SGD), a fresh shuffle
every epoch, no early stopping, on features standardised with the mean and std of the rows
it trains on. The PyTorch loop (float64 unless ``--torch-dtype float32``, one thread) also
copies our He-normal weights and zero biases; MLPClassifier keeps its own initialisation
(Glorot-uniform weights and biases).

1. Time. One training on all 150 Iris rows per contender per repeat, interleaved (the order
   rotates every repeat, one untimed warm-up each first); the median, min and max, and the
   ratios sklearn/ours and torch/ours of the medians against the targets 3x and 5x.
2. Held-out accuracy. The same stratified 80/20 splits (``StratifiedShuffleSplit``,
   random_state 0) for every contender, seed = split index. Targets: ours has a mean of at
   least 0.96 and is no lower than each same-architecture contender, nor than MLPClassifier
   with 16 hidden units (plain SGD, the same learning rate, epochs and batch size). The
   paired difference and its standard error show which gaps are noise: on 200 splits of
   30 test rows one error is 1/6000 of the mean.

What is timed is what a caller pays: ours is ``model.train.train`` as it stands, which also
evaluates loss and accuracy on the whole training set after every epoch for its history;
MLPClassifier keeps a running loss of its batches; the PyTorch loop computes nothing extra.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from model.data import Dataset, load_iris
from model.network import FloatArray, IntArray, Standardizer, predict_proba
from model.train import Hyperparameters, train

SPEED_TARGETS = {"sklearn": 3.0, "torch": 5.0}
"""Training must be at least this many times faster than each framework (medians)."""
ACCURACY_TARGET = 0.96
REFERENCE_HIDDEN_UNITS = 16
"""MLPClassifier's size in the issue's accuracy target for the defaults."""
THREAD_VARIABLES = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

Predict = Callable[[FloatArray], IntArray]
"""Class indices (n,) for raw measurements (n, 4)."""


@dataclass(frozen=True)
class Contender:
    """One framework's training of the network, with its own hidden size and learning rate."""

    framework: str  # "ours", "sklearn" or "torch"
    hidden_units: int
    learning_rate: float
    torch_dtype: str = "float64"
    torch_threads: int = 1
    plain: bool = False  # plain SGD whatever the defaults say: no momentum, no weight decay

    @property
    def label(self) -> str:
        name = {"ours": "numpy (ours)", "sklearn": "scikit-learn", "torch": "PyTorch"}
        plain = " plain" if self.plain else ""
        return f"{name[self.framework]} h{self.hidden_units} lr{self.learning_rate:g}{plain}"

    def fit(self, train_set: Dataset, hp: Hyperparameters, seed: int) -> Predict:
        hp = replace(hp, hidden_units=self.hidden_units, learning_rate=self.learning_rate)
        if self.plain:
            hp = replace(hp, momentum=0.0, weight_decay=0.0)
        if self.framework == "ours":
            return fit_ours(train_set, replace(hp, seed=seed))
        if self.framework == "sklearn":
            return fit_sklearn(train_set, hp, seed)
        if self.framework == "torch":
            return fit_torch(train_set, hp, seed, self.torch_dtype)
        raise ValueError(f"unknown framework {self.framework!r}")


# --- the three trainings ---------------------------------------------------------------


def fit_ours(train_set: Dataset, hp: Hyperparameters) -> Predict:
    model = train(train_set, hp).model

    def predict(raw: FloatArray) -> IntArray:
        return np.asarray(predict_proba(model, raw).argmax(axis=1), dtype=np.int64)

    return predict


def fit_sklearn(train_set: Dataset, hp: Hyperparameters, seed: int) -> Predict:
    """MLPClassifier with the same hyperparameters; tol=0 and n_iter_no_change=epochs so
    it runs every epoch. sklearn's L2 term adds alpha * W / batch to the mean-loss gradient,
    ours weight_decay * W, hence alpha = weight_decay * batch_size (0 by default)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    standardizer = Standardizer.fit(train_set.raw)
    classifier = MLPClassifier(
        hidden_layer_sizes=(hp.hidden_units,),
        activation="relu",
        solver="sgd",
        learning_rate="constant",
        learning_rate_init=hp.learning_rate,
        momentum=hp.momentum,
        nesterovs_momentum=False,
        alpha=hp.weight_decay * hp.batch_size,
        batch_size=hp.batch_size,
        max_iter=hp.epochs,
        shuffle=True,
        early_stopping=False,
        tol=0.0,
        n_iter_no_change=hp.epochs,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # It warns that max_iter was reached: running all epochs is what we asked for.
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(standardizer.transform(train_set.raw), train_set.y)
    if classifier.n_iter_ != hp.epochs:
        raise RuntimeError(f"MLPClassifier ran {classifier.n_iter_} epochs, not {hp.epochs}")

    def predict(raw: FloatArray) -> IntArray:
        return np.asarray(classifier.predict(standardizer.transform(raw)), dtype=np.int64)

    return predict


def fit_torch(train_set: Dataset, hp: Hyperparameters, seed: int, dtype_name: str) -> Predict:
    """The same network in PyTorch: He-normal weights and zero biases as in ours, a fresh
    permutation every epoch sliced into batches (no DataLoader), torch.optim.SGD."""
    import torch
    from torch import nn

    dtype = getattr(torch, dtype_name)
    generator = torch.Generator().manual_seed(seed)
    standardizer = Standardizer.fit(train_set.raw)
    X = torch.as_tensor(standardizer.transform(train_set.raw), dtype=dtype)
    y = torch.as_tensor(train_set.y, dtype=torch.int64)
    n = X.shape[0]
    hidden = nn.Linear(X.shape[1], hp.hidden_units, dtype=dtype)
    output = nn.Linear(hp.hidden_units, 3, dtype=dtype)
    net = nn.Sequential(hidden, nn.ReLU(), output)
    with torch.no_grad():
        for layer in (hidden, output):
            fan_in = layer.in_features
            draw = torch.randn(layer.out_features, fan_in, generator=generator, dtype=dtype)
            layer.weight.copy_(draw * math.sqrt(2.0 / fan_in))
            layer.bias.zero_()
    optimizer = torch.optim.SGD(
        [
            {"params": [hidden.weight, output.weight], "weight_decay": hp.weight_decay},
            {"params": [hidden.bias, output.bias], "weight_decay": 0.0},
        ],
        lr=hp.learning_rate,
        momentum=hp.momentum,
    )
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(hp.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, hp.batch_size):
            batch = order[start : start + hp.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(X[batch]), y[batch]).backward()
            optimizer.step()

    def predict(raw: FloatArray) -> IntArray:
        with torch.no_grad():
            logits = net(torch.as_tensor(standardizer.transform(raw), dtype=dtype))
        return np.asarray(logits.argmax(dim=1).numpy(), dtype=np.int64)

    return predict


# --- measurement -----------------------------------------------------------------------


def timed_fit(contender: Contender, dataset: Dataset, hp: Hyperparameters, seed: int) -> float:
    """Seconds for one training, with the garbage collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        contender.fit(dataset, hp, seed)
        return time.perf_counter() - start
    finally:
        gc.enable()


def time_contenders(
    contenders: Sequence[Contender], dataset: Dataset, hp: Hyperparameters, repeats: int
) -> dict[str, list[float]]:
    """Interleaved: every repeat trains each contender once, in an order rotated by one."""
    seconds: dict[str, list[float]] = {c.label: [] for c in contenders}
    for contender in contenders:
        contender.fit(dataset, hp, seed=0)  # warm-up: first-call costs, lazy imports
    for repeat in range(repeats):
        shift = repeat % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            seconds[contender.label].append(timed_fit(contender, dataset, hp, repeat))
    return seconds


def split_indices(y: IntArray, splits: int) -> list[tuple[IntArray, IntArray]]:
    from sklearn.model_selection import StratifiedShuffleSplit

    splitter = StratifiedShuffleSplit(n_splits=splits, test_size=0.2, random_state=0)
    placeholder = np.zeros((y.shape[0], 1))
    return [
        (np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64))
        for tr, te in splitter.split(placeholder, y)
    ]


def split_accuracy(
    contender: Contender,
    dataset: Dataset,
    hp: Hyperparameters,
    split: int,
    index: tuple[IntArray, IntArray],
) -> float:
    """Held-out accuracy of one training on one split (seed = split index)."""
    train_set, test_set = dataset.subset(index[0]), dataset.subset(index[1])
    predict = contender.fit(train_set, hp, split)
    return float((predict(test_set.raw) == test_set.y).mean())


def accuracy_chunk(
    contender: Contender,
    dataset: Dataset,
    hp: Hyperparameters,
    chunk: list[tuple[int, tuple[IntArray, IntArray]]],
) -> list[float]:
    if contender.framework == "torch":
        import torch

        torch.set_num_threads(contender.torch_threads)
    return [split_accuracy(contender, dataset, hp, split, index) for split, index in chunk]


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def accuracy_all(
    contenders: Sequence[Contender], dataset: Dataset, hp: Hyperparameters, splits: int, jobs: int
) -> dict[str, list[float]]:
    """Per-split accuracies of every contender, worked through by ``jobs`` processes.

    Each split is seeded on its own, so the figures do not depend on ``jobs``.
    """
    indexed = list(enumerate(split_indices(dataset.y, splits)))
    size = max(1, math.ceil(len(indexed) / (4 * jobs)))
    if jobs <= 1:
        return {c.label: accuracy_chunk(c, dataset, hp, indexed) for c in contenders}
    # spawn, not fork: a forked child of a process that has run torch's OpenMP pool can hang.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            c.label: [
                pool.submit(accuracy_chunk, c, dataset, hp, part) for part in chunks(indexed, size)
            ]
            for c in contenders
        }
        return {label: [a for f in parts for a in f.result()] for label, parts in futures.items()}


# --- reporting -------------------------------------------------------------------------


def machine_facts(torch_version: str | None) -> dict[str, Any]:
    import sklearn

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "torch": torch_version,
        "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        facts["threadpools"] = None
    else:
        keys = ("internal_api", "prefix", "version", "num_threads", "architecture")
        facts["threadpools"] = [{k: pool.get(k) for k in keys} for pool in threadpool_info()]
    return facts


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def speed_report(
    seconds: dict[str, list[float]], ours: Contender, others: Sequence[Contender]
) -> tuple[list[str], dict[str, Any]]:
    lines = [
        f"{'contender':<30}{'median':>10}{'min':>10}{'max':>10}{'ratio':>9}{'of mins':>9}"
        f"{'per repeat':>14}  target (on the ratio of medians)",
    ]
    base = seconds[ours.label]
    results: dict[str, Any] = {}
    for contender in [ours, *others]:
        times = seconds[contender.label]
        stats = summary(times)
        row = (
            f"{contender.label:<30}{stats['median'] * 1e3:>8.1f}ms{stats['min'] * 1e3:>8.1f}ms"
            f"{stats['max'] * 1e3:>8.1f}ms"
        )
        entry: dict[str, Any] = {"seconds": times, **stats}
        if contender is not ours:
            ratio = stats["median"] / statistics.median(base)
            of_minima = stats["min"] / min(base)  # least disturbed by other load on the machine
            paired = [t / b for t, b in zip(times, base, strict=True)]
            target = SPEED_TARGETS[contender.framework]
            entry |= {
                "ratio_of_medians": ratio,
                "ratio_of_minima": of_minima,
                "per_repeat_ratio_min": min(paired),
                "per_repeat_ratio_max": max(paired),
                "target": target,
                "pass": ratio >= target,
            }
            span = f"{min(paired):.2f}-{max(paired):.2f}x"
            row += f"{ratio:>8.2f}x{of_minima:>8.2f}x{span:>14}  >= {target:g}x "
            row += verdict(ratio >= target)
        lines.append(row)
        results[contender.label] = entry
    return lines, results


def accuracy_report(
    accuracies: dict[str, list[float]],
    ours: Contender,
    same_architecture: Sequence[Contender],
    reference: Contender,
    test_rows: int,
) -> tuple[list[str], dict[str, Any]]:
    """Mean, std, errors and the paired difference (ours - other) with its standard error."""
    mine = np.array(accuracies[ours.label])
    lines = [
        f"{'contender':<30}{'mean':>8}{'std':>8}{'min':>8}{'errors':>8}"
        f"{'ours - it (paired)':>24}{'w/t/l':>12}",
    ]
    results: dict[str, Any] = {}
    for label, values in accuracies.items():
        acc = np.array(values)
        errors = round(float((1 - acc).sum()) * test_rows)
        row = f"{label:<30}{acc.mean():>8.4f}{acc.std():>8.4f}{acc.min():>8.4f}{errors:>8d}"
        entry: dict[str, Any] = {
            "mean": float(acc.mean()),
            "std": float(acc.std()),
            "min": float(acc.min()),
            "test_errors": errors,
            "per_split": values,
        }
        if label != ours.label:
            diff = mine - acc
            se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
            wins, ties = int((diff > 0).sum()), int((diff == 0).sum())
            losses = diff.size - wins - ties
            entry |= {"paired_difference": float(diff.mean()), "paired_se": se}
            row += f"{diff.mean():>+15.4f} ± {se:.4f}{f'{wins}/{ties}/{losses}':>12}"
        lines.append(row)
        results[label] = entry
    mean = results[ours.label]["mean"]
    checks = [(f"ours mean >= {ACCURACY_TARGET:g}", mean >= ACCURACY_TARGET)]
    checks += [
        (f"ours >= {c.label}", mean >= results[c.label]["mean"])
        for c in [reference, *same_architecture]
    ]
    results["verdicts"] = dict(checks)
    lines += [f"  {verdict(ok)}  {name}" for name, ok in checks]
    return lines, results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed trainings each (7)")
    parser.add_argument("--splits", type=int, default=200, help="80/20 splits (200)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 20 splits: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes for the accuracy part (1; timing is always serial). More help only "
        "on real cores: on a 2-vCPU VM two processes each ran 1.75x slower",
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--torch-dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch.set_num_threads (1: threads only cost at this size; NumPy's BLAS does "
        "not split such small products either)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="try other defaults, e.g. --set weight_decay=0.01 (repeatable; every contender "
        "follows, except the plain-SGD hidden-16 reference)",
    )
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.splits = 3, 20
    if args.repeats < 1 or args.splits < 2 or args.jobs < 1:
        parser.error("--repeats and --jobs must be at least 1, --splits at least 2")
    return args


def hyperparameters(assignments: Sequence[str]) -> Hyperparameters:
    """The defaults, with ``NAME=VALUE`` overrides converted to each field's type."""
    from model.errors import HyperparameterError

    defaults = Hyperparameters()
    names = {f.name for f in fields(defaults)}
    changes: dict[str, Any] = {}
    try:
        for assignment in assignments:
            name, _, value = assignment.partition("=")
            if name not in names or not value:
                raise ValueError(f"expected NAME=VALUE, NAME one of {', '.join(sorted(names))}")
            kind = type(getattr(defaults, name))
            truth = value.lower() in ("1", "true", "yes")
            changes[name] = truth if kind is bool else kind(value)
        return replace(defaults, **changes)
    except (ValueError, HyperparameterError) as error:
        raise SystemExit(f"--set {' '.join(assignments)}: {error}") from None


def torch_version(wanted: bool, threads: int) -> str | None:
    if not wanted:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return str(torch.__version__)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("scikit-learn is missing: pip install -e '.[bench]' (or make bench)", file=sys.stderr)
        return 2
    hp = hyperparameters(args.set)
    torch_found = torch_version(not args.no_torch, args.torch_threads)
    facts = machine_facts(torch_found)
    dataset = load_iris()

    ours = Contender("ours", hp.hidden_units, hp.learning_rate)
    same = [Contender("sklearn", hp.hidden_units, hp.learning_rate)]
    if torch_found:
        same.append(
            Contender(
                "torch", hp.hidden_units, hp.learning_rate, args.torch_dtype, args.torch_threads
            )
        )
    reference = Contender("sklearn", REFERENCE_HIDDEN_UNITS, hp.learning_rate, plain=True)

    out: list[str] = [
        f"Iris training benchmark: hidden {hp.hidden_units}, learning rate {hp.learning_rate:g}, "
        f"{hp.epochs} epochs, batch {hp.batch_size}, momentum {hp.momentum:g}, "
        f"weight decay {hp.weight_decay:g}",
        f"machine: {facts['platform']}, {facts['cpu_count']} CPUs "
        f"({facts['usable_cpus']} usable), Python {facts['python']}",
        f"numpy {facts['numpy']}, scikit-learn {facts['scikit_learn']}, "
        + (
            f"torch {torch_found} ({args.torch_dtype}, {args.torch_threads} thread(s))"
            if torch_found
            else "torch not installed or --no-torch: skipped"
        ),
        "env: "
        + ", ".join(
            f"{k}={v if v is not None else '(unset)'}" for k, v in facts["environment"].items()
        ),
    ]
    for pool in facts["threadpools"] or []:
        out.append(
            f"threadpool: {pool['internal_api']} ({pool['prefix']}) {pool['version'] or ''} "
            f"{pool['num_threads']} threads {pool['architecture'] or ''}".rstrip()
        )
    print("\n".join(out), flush=True)
    results: dict[str, Any] = {"machine": facts, "hyperparameters": hp.to_dict()}
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    missed = False

    if not args.skip_timing:
        print(f"\nTraining time on all {len(dataset)} rows, {args.repeats} interleaved repeats")
        seconds = time_contenders([ours, *same], dataset, hp, args.repeats)
        lines, results["timing"] = speed_report(seconds, ours, same)
        print("\n".join(lines), flush=True)
        missed |= not all(e.get("pass", True) for e in results["timing"].values())

    if not args.skip_accuracy:
        test_rows = len(dataset) - round(0.8 * len(dataset))
        print(
            f"\nHeld-out accuracy, {args.splits} stratified 80/20 splits "
            f"({test_rows} test rows each: one error moves a mean by "
            f"{100 / test_rows / args.splits:.3f} percentage points), {args.jobs} process(es)",
            flush=True,
        )
        started = time.perf_counter()
        contenders = [ours, *same, reference]
        accuracies = accuracy_all(contenders, dataset, hp, args.splits, args.jobs)
        lines, results["accuracy"] = accuracy_report(accuracies, ours, same, reference, test_rows)
        print("\n".join(lines))
        print(f"({time.perf_counter() - started:.0f} s)")
        missed |= not all(results["accuracy"]["verdicts"].values())

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
