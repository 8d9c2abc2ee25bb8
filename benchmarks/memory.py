"""Peak memory (RSS) of each strategy step, against a plain `fit` of the same model and epochs.

Two models, each compiled from the same seed and not pre-trained:

- `cnn`: the example CNN (`kstruct.models.example_cnn`) on MNIST-5k's training split (bundled);
- `text`: a big-Embedding text model, Embedding(50,000, 64) -> GlobalAveragePooling1D ->
  Dense(32, relu) -> Dense(4, softmax), on 4,000 random token sequences of length 64
  (a 12.8 MB table that dominates the parameters).

Every measurement runs in a fresh child process, so peaks never mix: a plain
`model.fit(x, y, epochs)` (the reference), then one `kstruct.optimize(model, strategy,
target="int8", epochs=...)` per strategy, with the same training rows (validation rows
given apart). The peak is `resource.getrusage` `ru_maxrss` read at the end of the child:
RUSAGE_SELF (the child) and RUSAGE_CHILDREN (the largest of its own children, where
conversion or LiteRT runs isolated); the table's peak is the larger of the two. The
target (issue 19) is every step at most 1.3x the plain fit's peak.

How to read it: about 500-600 MB of every figure are TensorFlow's shared-library pages,
and how many of them a process has mapped depends on the page cache, so the plain fit's
peak moves by up to 100 MB between runs on a busy machine. The `anon` column (the peak of
RssAnon, sampled every 10 ms) is the memory the process allocated itself, the steadier
figure to compare. The RUSAGE_CHILDREN figure of about that size in every row is a
process TensorFlow forks at import: it counts the pages it shares with its parent.

Run: `python benchmarks/memory.py [--epochs 1] [--models cnn,text] [--strategies "qat,cluster(16) + qat"]`.
A full run takes about five minutes on 2 cores (clustering the Embedding is most of it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("cnn", "text")
STRATEGIES = ("prune(0.75)", "prune_channels(0.5)", "cluster(16)", "qat", "cluster(16) + qat")
TARGET_RATIO = 1.3
VOCABULARY, EMBEDDING_DIM, SEQUENCE, TEXT_SAMPLES, TEXT_CLASSES = 50_000, 64, 64, 4_000, 4
MARKER = "kstruct-memory:"

from benchmarks.backends import cpu_description  # noqa: E402  (one way to print the CPU)


def _total_memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


# --- in the child -------------------------------------------------------------------------------


def _model_and_data(name: str):
    """(compiled model, (x, y) training rows, (x, y) validation rows) for `name`, seeded."""
    import keras
    import numpy as np

    from kstruct.models import compile_for_classification, example_cnn

    keras.utils.set_random_seed(0)
    if name == "cnn":
        from kstruct.data import load_mnist_5k_splits

        train, validation, _ = load_mnist_5k_splits()
        return compile_for_classification(example_cnn()), train, validation
    if name == "text":
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, VOCABULARY, size=(TEXT_SAMPLES + TEXT_SAMPLES // 8, SEQUENCE), dtype="int32")
        labels = (tokens[:, 0] % TEXT_CLASSES).astype("int32")  # learnable from the first token
        model = keras.Sequential(
            [
                keras.Input((SEQUENCE,), dtype="int32"),
                keras.layers.Embedding(VOCABULARY, EMBEDDING_DIM, name="embedding"),
                keras.layers.GlobalAveragePooling1D(name="pool"),
                keras.layers.Dense(32, activation="relu", name="hidden"),
                keras.layers.Dense(TEXT_CLASSES, activation="softmax", name="classifier"),
            ],
            name="text_model",
        )
        n = TEXT_SAMPLES
        return compile_for_classification(model), (tokens[:n], labels[:n]), (tokens[n:], labels[n:])
    raise SystemExit(f"unknown model {name!r}; expected one of {MODELS}")


def _peak_mb() -> tuple[float, float]:
    """(this process's peak RSS, its largest child's peak RSS) in MB; Linux reports kilobytes."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 ** 2
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return own, children


class AnonymousPeak:
    """The largest RssAnon (memory the process allocated, not mapped files) seen, sampled every 10 ms (Linux)."""

    def __init__(self, interval: float = 0.01):
        self.peak = 0.0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self._interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def child(model_name: str, strategy: str, epochs: int) -> None:
    started = time.perf_counter()
    anonymous = AnonymousPeak()
    model, (x, y), validation = _model_and_data(model_name)
    if strategy == "plain":
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    else:
        import kstruct

        kstruct.optimize(
            model, strategy, train_data=(x, y), validation_data=validation, epochs=epochs, target="int8", verbose=0
        )
    own, children = _peak_mb()
    import keras

    result = {"self_mb": own, "children_mb": children, "anon_mb": anonymous.stop(),
              "seconds": time.perf_counter() - started, "backend": keras.backend.backend()}
    print(MARKER + json.dumps(result), flush=True)


# --- in the parent ------------------------------------------------------------------------------


def measure(model_name: str, strategy: str, epochs: int) -> dict:
    command = [sys.executable, __file__, "--child", model_name, strategy, "--epochs", str(epochs)]
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    results = [line for line in process.stdout.splitlines() if line.startswith(MARKER)]
    if process.returncode != 0 or not results:
        lines = (process.stderr or process.stdout).strip().splitlines() or ["no output"]
        errors = [line for line in lines if "Error" in line.split(":")[0]]  # the exception line, not a log line
        return {"error": f"exit {process.returncode}: {(errors or lines)[-1][:160]}"}
    return json.loads(results[-1][len(MARKER):])


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def _split(text: str) -> list[str]:
    """Comma-separated names; commas inside parentheses (`prune(0.5, epochs=1)`) stay in their step."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        items.append(current.strip())
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the plain fit and of every training step")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategy strings")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per measurement")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.epochs)
        return

    models, strategies = _split(args.models), _split(args.strategies)
    print(f"CPU: {cpu_description()}; {_total_memory()}")
    print(f"keras {_version('keras')}, tensorflow {_version('tensorflow')}; epochs {args.epochs}; peak RSS of a fresh "
          "process per row (the larger of RUSAGE_SELF and RUSAGE_CHILDREN); anon: peak RssAnon\n", flush=True)
    print("| model | strategy | backend | peak MB (self / children) | plain fit MB | ratio | <= 1.3x | anon MB (plain) "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for model_name in models:
        plain = measure(model_name, "plain", args.epochs)
        if "error" in plain:
            print(f"| {model_name} | plain fit | | {plain['error']} | | | | | |", flush=True)
            continue
        reference = max(plain["self_mb"], plain["children_mb"])
        print(f"| {model_name} | plain fit | {plain['backend']} | {reference:.0f} ({plain['self_mb']:.0f} / "
              f"{plain['children_mb']:.0f}) | {reference:.0f} | 1.00 | yes | {plain['anon_mb']:.0f} | "
              f"{plain['seconds']:.0f} |", flush=True)
        for strategy in strategies:
            row = measure(model_name, strategy, args.epochs)
            if args.json:
                print(json.dumps({"model": model_name, "strategy": strategy, "plain": plain, **row}), flush=True)
            if "error" in row:
                print(f"| {model_name} | {strategy} | | {row['error']} | {reference:.0f} | | | | |", flush=True)
                continue
            peak = max(row["self_mb"], row["children_mb"])
            ratio = peak / reference
            print(f"| {model_name} | {strategy} | {row['backend']} | {peak:.0f} ({row['self_mb']:.0f} / "
                  f"{row['children_mb']:.0f}) | {reference:.0f} | {ratio:.2f} | "
                  f"{'yes' if ratio <= TARGET_RATIO else 'NO'} | {row['anon_mb']:.0f} ({plain['anon_mb']:.0f}) | "
                  f"{row['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
