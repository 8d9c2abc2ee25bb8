"""`kstruct search MODEL.keras --data DATA.npz --trials N --budget KEY=VALUE --out DIR`: structure search.

    kstruct search MODEL.keras --data DATA.npz --trials N --budget latency_ms=0.5
        [--budget tflite_bytes=40000] --target int8 --out DIR [--tuner random]
        [--objective val_loss] [--epochs N] [--overwrite] [--chief|--worker --oracle HOST:PORT]

`DIR` holds the search (run it again to resume), `best.keras`, `trials.json` and
`pareto.png`. A search in which no trial met the budget exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os

from kstruct.cli._files import (
    TRAINING_NPZ_HELP,
    add_loading_options,
    import_modules,
    load_keras_model,
    load_training_npz,
)
from kstruct.cli._usage import NothingFound, UsageError, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("search", help="search widths, depth and activations under a deployment budget")
    p.add_argument("model", help="a .keras or .h5 file (Sequential or functional, compiled)")
    p.add_argument("--data", required=True, help=TRAINING_NPZ_HELP)
    p.add_argument("--trials", type=positive_int, default=12, help="trials in all (default 12)")
    p.add_argument("--budget", action="append", metavar="KEY=VALUE",
                   help="tflite_bytes=, latency_ms= or params=; repeat for several")
    p.add_argument("--target", default="int8", help="TFLite target (default int8)")
    p.add_argument("--out", required=True, help="search directory; run again to resume")
    p.add_argument("--tuner", default="random", help="random (default), bayesian or hyperband")
    p.add_argument("--objective", default=None,
                   help="metric to optimize (default val_accuracy); e.g. val_loss for a regression model")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs per trial (default 2)")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--chief", action="store_true", help="run the oracle for distributed workers")
    p.add_argument("--worker", action="store_true", help="run trials for a chief at --oracle")
    p.add_argument("--oracle", help="HOST:PORT of the chief's oracle")
    p.add_argument("--tuner-id", help="this worker's id (default worker<pid>)")
    add_loading_options(p)
    p.set_defaults(run=run, interrupted="interrupted; run the same command again to resume")


def _parse_budget(items: list[str] | None) -> dict[str, float]:
    from kstruct.search import BUDGET_KEYS

    budget: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--budget expects KEY=VALUE, e.g. latency_ms=0.5. Received: {item!r}")
        if key not in BUDGET_KEYS:
            raise UsageError(f"unknown budget key {key!r}; valid keys: {', '.join(BUDGET_KEYS)}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--budget {key} expects a number. Received: {value!r}") from None
        if not number > 0:
            raise UsageError(f"--budget {key} must be positive. Received: {value}")
        budget[key] = int(number) if key in ("tflite_bytes", "params") else number
    return budget


def _distributed_environment(args: argparse.Namespace) -> None:
    """Sets Keras Tuner's chief/worker variables from --chief/--worker/--oracle/--tuner-id."""
    if not (args.chief or args.worker):
        return
    if args.oracle:
        host, sep, port = args.oracle.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"--oracle expects HOST:PORT, e.g. 127.0.0.1:8000. Received: {args.oracle!r}")
        os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
    if "KERASTUNER_ORACLE_IP" not in os.environ or "KERASTUNER_ORACLE_PORT" not in os.environ:
        raise UsageError("--chief/--worker need --oracle HOST:PORT (or KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)")
    if args.chief:
        os.environ["KERASTUNER_TUNER_ID"] = "chief"
    else:
        tuner_id = args.tuner_id or os.environ.get("KERASTUNER_TUNER_ID") or f"worker{os.getpid()}"
        if "chief" in tuner_id:
            raise UsageError(f"a worker's --tuner-id must not contain 'chief'. Received: {tuner_id!r}")
        os.environ["KERASTUNER_TUNER_ID"] = tuner_id


def run(args: argparse.Namespace) -> int:
    import tflite_export

    from kstruct.search import TUNER_NAMES, BudgetError, plot_pareto
    from kstruct.search import run as run_search

    if args.target not in tflite_export.TARGETS:
        raise UsageError(f"unknown target {args.target!r}; valid targets: {', '.join(tflite_export.TARGETS)}")
    if args.tuner not in TUNER_NAMES:
        raise UsageError(f"unknown tuner {args.tuner!r}; valid tuners: {', '.join(TUNER_NAMES)}")
    if args.chief and args.worker:
        raise UsageError("pass --chief or --worker, not both")
    budget = _parse_budget(args.budget)
    import_modules(args.imports)
    train, validation = load_training_npz(args.data)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    _distributed_environment(args)
    model = load_keras_model(args.model, unsafe=args.unsafe_deserialization)
    options = {} if args.objective is None else {"objective": args.objective}
    try:
        result = run_search(
            model, train, validation, budget=budget, target=args.target, tuner=args.tuner,
            max_trials=args.trials, epochs=args.epochs or 2, directory=args.out, overwrite=args.overwrite,
            verbose=0, **options,
        )
    except BudgetError as err:
        raise NothingFound(str(err)) from None
    print(result.table())
    print(result.summary())
    if args.worker:
        print(f"kstruct: worker done; best trial {result.best_trial.trial_id}")
        return 0
    result.best_model.save(os.path.join(args.out, "best.keras"))
    with open(os.path.join(args.out, "trials.json"), "w") as f:
        json.dump(result.to_dict(), f, indent=1)
    plot_pareto(result, os.path.join(args.out, "pareto.png"))
    best = result.best_trial
    print(
        f"kstruct: best trial {best.trial_id}: {result.objective}={best.objective:.4f}, "
        f"{best.tflite_bytes} bytes, {best.latency_ms:.4f} ms, {best.params} parameters"
    )
    print(f"kstruct: wrote best.keras, trials.json and pareto.png to {args.out}/")
    return 0
