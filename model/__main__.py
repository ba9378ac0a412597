"""Command line: ``python -m model train ...`` and ``python -m model evaluate ...``.

Progress goes to stderr; the last line on stdout is one JSON object. Bad arguments, bad data
or a corrupt model give a one-line error on stderr and exit status 2 (1 for other failures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from model.data import CLASSES, Dataset, load_csv, load_iris
from model.errors import IrisModelError
from model.network import forward
from model.persistence import DEFAULT_DATA_DIR, ModelStore
from model.train import EpochStats, Hyperparameters, evaluate, hyperparameter_fields, train


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m model", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train a new model version and store it")
    t.add_argument("--csv", type=Path, help="training data (default: the shipped Iris data)")
    t.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    for name, kind, default, allowed, about in hyperparameter_fields():
        option = "--" + name.replace("_", "-")
        if kind is bool:
            t.add_argument(option, action="store_true", help=about)
        else:
            t.add_argument(option, type=kind, default=default, help=f"{about}; {allowed}")
    t.add_argument("--no-activate", action="store_true", help="store without making it current")
    t.add_argument("--quiet", action="store_true", help="no progress on stderr")

    e = commands.add_parser("evaluate", help="accuracy, loss and confusion matrix of a model")
    e.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    e.add_argument("--version", help="a stored version (default: the current one)")
    e.add_argument("--csv", type=Path, help="evaluation data (default: the shipped Iris data)")
    return parser


def load_data(csv: Path | None) -> tuple[Dataset, str]:
    return (load_csv(csv), str(csv)) if csv else (load_iris(), "iris")


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    hp = Hyperparameters(**{name: getattr(args, name) for name, *_ in hyperparameter_fields()})
    dataset, source = load_data(args.csv)
    every = max(1, hp.epochs // 10)

    def progress(stats: EpochStats) -> None:
        if not args.quiet and (stats.epoch % every == 0 or stats.epoch == stats.epochs):
            line = f"epoch {stats.epoch}/{stats.epochs}  loss {stats.train_loss:.4f}"
            line += f"  accuracy {stats.train_accuracy:.3f}"
            if stats.validation_loss is not None:
                line += f"  validation loss {stats.validation_loss:.4f}"
            print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    result = train(dataset, hp, on_epoch=progress)
    seconds = time.perf_counter() - started
    info = result.record(hp) | {
        "data": {"source": source, "rows": len(dataset)},
        "data_sha256": dataset.sha256(),
        "training_seconds": seconds,
    }
    store = ModelStore(args.data_dir / "models")
    version = store.save(result.model, info, activate=not args.no_activate)
    return {
        "version": version,
        "activated": not args.no_activate,
        "metrics": result.metrics,
        "training_seconds": round(seconds, 4),
    }


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    store = ModelStore(args.data_dir / "models")
    stored = store.load(args.version) if args.version else store.load_current()
    dataset, source = load_data(args.csv)
    loss, accuracy = evaluate(stored.model, dataset)
    X = stored.model.standardizer.transform(dataset.raw)
    predicted = forward(stored.model.params, X).o_s.argmax(axis=1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(confusion, (dataset.y, predicted), 1)
    return {
        "version": stored.version,
        "data": source,
        "rows": len(dataset),
        "accuracy": accuracy,
        "loss": loss,
        "classes": list(CLASSES),
        "confusion_matrix": confusion.tolist(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run_train(args) if args.command == "train" else run_evaluate(args)
    except IrisModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
