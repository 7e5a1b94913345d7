"""Search quality for a budget (issue 13): bare keras-tuner random search against ktune's searches.

Every variant searches the same space on the same rows with the same budget (trials x epochs), once per
seed: scikit-learn's digits, scaled to [0, 1], split once into training, validation and a held-out test
set (`TEST_ROWS` rows, stratified, random_state 0) that no search sees. Variants:

- keras-tuner random: bare keras-tuner's RandomSearch in a fresh process (the model function of
  bench/baseline.py, the same hyperparameter names and ranges as the ktune request), seeded with the seed;
- ktune random, bayesian, tpe, tpe+median, tpe+asha: jobs through the API and a worker, as users run them
  (bench/run.py's stack: a private redis-server, the API and one worker), one job after another.

ktune's jobs run one trial at a time (`tuner.max_parallel_trials: 1`, a worker with one pool process), as
the bare search does, so wall times compare and every trial of a model-based search or a pruning rule sees
all the trials before it.

Per variant and seed: the best validation objective (val_accuracy), the test accuracy of the best model
(ktune's downloaded from /v1/jobs/{id}/artifacts/best-model, keras-tuner's from get_best_models),
the epochs actually trained (a pruned trial counts the epochs it trained) and the wall time (ktune: POST to
a final status; keras-tuner: tuner creation to the end of search(), after its imports, like bench/run.py).

The goal: TPE with pruning (a) reaches the bare random search's median best objective within at most half
of its epochs (trials in order of completion, epochs summed until the first trial at or past it; median
over seeds) and (b) at the equal budget beats its median best over seeds.

Run from the repository root: `PYTHONPATH=. .venv/bin/python bench/search_quality.py [--seeds 5]
[--trials 20] [--epochs 20] [--train-rows N] [--variants ...]`. Logs go to
bench/results/<date>-<time>-search-quality-logs, per-seed figures to
bench/results/<date>-<time>-search-quality.json (written after every search).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    RESULTS,
    ROOT,
    Stack,
    digits_request,
    environment,
    ktune_stack,
    run_ktune,
    started,
    tail,
    warn_if_busy,
)

TEST_ROWS = 360
VALIDATION_ROWS = 360
OBJECTIVE = "val_accuracy"
BARE = "keras-tuner random"
# The pruning rules' knobs: judged from epoch 3 (median) or at rungs of 2, 6 and 18 epochs (ASHA), so that
# a trial with a slow first epoch or two (a low learning rate) is not stopped on its first value.
MEDIAN = {"rule": "median", "warmup_epochs": 2, "min_trials": 3}
ASHA = {"rule": "asha", "min_epochs": 2, "reduction_factor": 3}
VARIANTS: dict[str, dict[str, Any] | None] = {
    BARE: None,
    "ktune random": {"algorithm": "random"},
    "ktune bayesian": {"algorithm": "bayesian"},
    "ktune tpe": {"algorithm": "tpe"},
    "ktune tpe+median": {"algorithm": "tpe", "pruning": MEDIAN},
    "ktune tpe+asha": {"algorithm": "tpe", "pruning": ASHA},
}
PRUNED_TPE = ("ktune tpe+median", "ktune tpe+asha")


# ---- the data and the requests ------------------------------------------------------------------------


def digits_split(train_rows: int | None = None) -> dict[str, tuple[list[list[float]], list[int]]]:
    """Digits scaled to [0, 1]: held-out test rows first (stratified, random_state 0), then validation;
    with `train_rows`, a stratified sample of that many training rows (a harder problem: fewer rows make
    the configurations differ more)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=TEST_ROWS, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VALIDATION_ROWS, random_state=0, stratify=y_rest
    )
    if train_rows is not None and train_rows < len(y_train):
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=train_rows, random_state=0, stratify=y_train
        )
    return {
        name: (xs.tolist(), ys.astype(int).tolist())
        for name, xs, ys in (
            ("train", x_train, y_train),
            ("validation", x_val, y_val),
            ("test", x_test, y_test),
        )
    }


def request_for(
    tuner: dict[str, Any],
    seed: int,
    trials: int,
    epochs: int,
    data: dict[str, tuple[list[list[float]], list[int]]],
) -> dict[str, Any]:
    """bench/run.py's digits search (its space) on our split, with this budget, seed and tuner."""
    request = digits_request()
    request["data"] = {part: {"x": data[part][0], "y": data[part][1]} for part in ("train", "validation")}
    request["training"]["epochs"] = epochs
    request["objective"] = {"name": OBJECTIVE, "direction": "max"}
    request["tuner"] = {"max_trials": trials, "seed": seed, "max_parallel_trials": 1, **tuner}
    request["limits"] = {"max_failed_trials": trials}  # count diverging trials, don't end the search
    return request


# ---- what a search gave -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One search of one variant and seed; `curve` is [epochs, objective] per trial in completion order
    (objective null for a trial that failed)."""

    variant: str
    seed: int
    status: str
    wall_s: float
    best_objective: float | None
    test_accuracy: float | None
    epochs: int
    trials_completed: int
    pruned: int = 0
    curve: list[tuple[int, float | None]] = field(default_factory=list)
    job_id: str | None = None
    best_hyperparameters: dict[str, Any] = field(default_factory=dict)
    error: Any = None


def epochs_to_reach(curve: list[tuple[int, float | None]], target: float) -> float:
    """Epochs trained up to and including the first trial whose objective (maximised) is at least
    `target`; infinity when none is."""
    spent = 0
    for epochs, value in curve:
        spent += epochs
        if value is not None and value >= target:
            return float(spent)
    return math.inf


def test_accuracy(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a saved classifier on the held-out rows (classes are the digits 0-9 in order)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # only here: the benchmark's own process needs TensorFlow for this alone

    model = keras.models.load_model(model_path)
    probabilities = np.asarray(model.predict(x.astype(np.float32), verbose=0))
    return float(np.mean(probabilities.argmax(axis=1) == y))


def trained_epochs(trial: dict[str, Any]) -> int:
    """Epochs a trial trained, summed over its executions (the longest per-epoch history of each)."""
    return sum(max((len(v) for v in e.get("history", {}).values()), default=0) for e in trial["executions"])


def run_variant_ktune(
    stack: Stack, variant: str, request: dict[str, Any], test: tuple[np.ndarray, np.ndarray], logs: Path
) -> Outcome:
    """One ktune job to its end, then its trials' epochs and its best model's test accuracy."""
    result = run_ktune(stack, request, "fast")
    seed = request["tuner"]["seed"]
    trials = stack.client.get(f"/v1/jobs/{result.job_id}/trials", params={"history": "true"}).json()["items"]
    trials.sort(key=lambda t: t.get("finished_at") or "~")
    curve = [
        (trained_epochs(t), t["objective_value"] if t["status"] == "completed" else None) for t in trials
    ]
    accuracy = None
    if result.status == "succeeded":
        model = stack.client.get(f"/v1/jobs/{result.job_id}/artifacts/best-model")
        model.raise_for_status()
        path = logs / f"{variant.replace(' ', '-')}-{seed}.keras"
        path.write_bytes(model.content)
        accuracy = test_accuracy(path, *test)
    return Outcome(
        variant=variant,
        seed=seed,
        status=result.status,
        wall_s=result.wall_s,
        best_objective=result.best_objective,
        test_accuracy=accuracy,
        epochs=sum(epochs for epochs, _ in curve),
        trials_completed=result.trials_completed,
        pruned=sum(1 for t in trials if t.get("stopped_early")),
        curve=curve,
        job_id=result.job_id,
        best_hyperparameters=result.best_hyperparameters,
        error=result.error,
    )


def run_variant_bare(request_path: Path, data_path: Path, logs: Path, seed: int) -> Outcome:
    """Bare keras-tuner in a fresh process (this file's --bare mode)."""
    result_path = logs / f"bare-{seed}.json"
    log = logs / f"bare-{seed}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, __file__, "--bare", str(request_path), str(data_path), str(result_path)]
    with started(argv, log, env) as process:
        process.wait()
    if process.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"bare keras-tuner exited with {process.returncode}; {log}:\n{tail(log)}")
    child = json.loads(result_path.read_text())
    return Outcome(variant=BARE, seed=seed, status="succeeded", **child)


# ---- bare keras-tuner (runs in its own process) -------------------------------------------------------


def bare_search(request_path: Path, data_path: Path, result_path: Path) -> None:
    """keras-tuner's RandomSearch with bench/baseline.py's digits model on the request's rows and budget;
    writes an Outcome's fields (but variant, seed and status) to `result_path`."""
    import keras
    import keras_tuner as kt
    from baseline import arrays, build_digits_model, tuner_class

    per_fit: list[int] = []

    class EpochCounter(keras.callbacks.Callback):  # type: ignore[misc]
        """Counts each fit's epochs into `per_fit` (keras-tuner deep-copies callbacks; the list is shared
        through the closure, not copied)."""

        def on_train_begin(self, logs: Any = None) -> None:
            per_fit.append(0)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            per_fit[-1] += 1

    request = json.loads(request_path.read_text())
    test = json.loads(data_path.read_text())
    x, y = arrays(request["data"]["train"])
    validation = arrays(request["data"]["validation"])
    tuner_spec = request["tuner"]
    cls = tuner_class()
    with tempfile.TemporaryDirectory(prefix="ktune-bench-quality-") as directory:
        begun = time.perf_counter()
        tuner = cls(
            build_digits_model,
            objective=kt.Objective(OBJECTIVE, direction="max"),
            max_trials=tuner_spec["max_trials"],
            seed=tuner_spec["seed"],
            directory=directory,
            project_name="digits",
            overwrite=True,
        )
        tuner.search(
            x,
            y,
            epochs=request["training"]["epochs"],
            batch_size=request["training"]["batch_size"],
            validation_data=validation,
            callbacks=[EpochCounter()],
            verbose=0,
        )
        wall = time.perf_counter() - begun
        trials = sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
        best = tuner.oracle.get_best_trials(1)[0]
        model_path = Path(directory) / "best.keras"
        tuner.get_best_models(1)[0].save(model_path)
        accuracy = test_accuracy(model_path, np.asarray(test["x"]), np.asarray(test["y"]))
    curve = [
        (epochs, trial.score if trial.status == "COMPLETED" else None)
        for epochs, trial in zip(per_fit, trials, strict=False)
    ]
    result = {
        "wall_s": wall,
        "best_objective": best.score,
        "test_accuracy": accuracy,
        "epochs": sum(per_fit),
        "trials_completed": sum(1 for t in trials if t.status == "COMPLETED"),
        "curve": curve,
        "best_hyperparameters": best.hyperparameters.values,
    }
    result_path.write_text(json.dumps(result, indent=2))


# ---- the summary --------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    """The median of the values present; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(outcomes: list[Outcome]) -> tuple[str, list[str], dict[str, Any]]:
    """The table of medians over seeds, the verdict lines and the same figures as a dict."""
    by_variant: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_variant.setdefault(outcome.variant, []).append(outcome)
    bare = by_variant.get(BARE, [])
    target = median([o.best_objective for o in bare])
    bare_epochs = median([float(o.epochs) for o in bare])
    figures: dict[str, Any] = {"target": target, "bare_median_epochs": bare_epochs, "variants": {}}
    header = (
        "| variant | seeds | best val_accuracy | test accuracy | epochs trained | wall (s) | pruned trials "
        "| epochs to reach keras-tuner's median best |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant, runs in by_variant.items():
        reach = [epochs_to_reach([(e, v) for e, v in o.curve], target) for o in runs] if target else []
        reached = sum(1 for r in reach if math.isfinite(r))
        row = {
            "seeds": len(runs),
            "best_objective": median([o.best_objective for o in runs]),
            "best_objective_range": [
                min(o.best_objective for o in runs if o.best_objective is not None),
                max(o.best_objective for o in runs if o.best_objective is not None),
            ]
            if any(o.best_objective is not None for o in runs)
            else None,
            "test_accuracy": median([o.test_accuracy for o in runs]),
            "epochs": median([float(o.epochs) for o in runs]),
            "wall_s": median([o.wall_s for o in runs]),
            "pruned": median([float(o.pruned) for o in runs]),
            "epochs_to_reach": statistics.median(reach) if reach else None,
            "reached": reached,
        }
        figures["variants"][variant] = row
        low, high = row["best_objective_range"] or (math.nan, math.nan)
        to_reach = row["epochs_to_reach"]
        reach_text = (
            "-"
            if to_reach is None
            else f"{to_reach:.0f} ({reached}/{len(runs)} reached)"
            if math.isfinite(to_reach)
            else f"not reached ({reached}/{len(runs)} reached)"
        )
        lines.append(
            f"| {variant} | {len(runs)} | {fmt(row['best_objective'], '.4f')} ({low:.4f}-{high:.4f}) "
            f"| {fmt(row['test_accuracy'], '.4f')} | {fmt(row['epochs'], '.0f')} "
            f"| {fmt(row['wall_s'], '.1f')} "
            f"| {fmt(row['pruned'], '.0f')} | {reach_text} |"
        )
    verdict = []
    for variant in PRUNED_TPE:
        row = figures["variants"].get(variant)
        if row is None or target is None or bare_epochs is None:
            continue
        half = bare_epochs / 2
        a = row["epochs_to_reach"] is not None and row["epochs_to_reach"] <= half
        b = row["best_objective"] is not None and row["best_objective"] > target
        row["goal_a"], row["goal_b"] = a, b
        verdict.append(
            f"{variant}: (a) median epochs to reach {target:.4f} = {fmt(row['epochs_to_reach'], '.0f')} "
            f"against half of keras-tuner's {bare_epochs:.0f} = {half:.0f}: {'met' if a else 'NOT met'}; "
            f"(b) median best {fmt(row['best_objective'], '.4f')} > {target:.4f}: {'met' if b else 'NOT met'}"
        )
    return "\n".join(lines), verdict, figures


def fmt(value: float | None, spec: str) -> str:
    """A number, a dash when missing, 'inf' when never reached."""
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else format(value, spec)


# ---- the run ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N per variant (default 5)")
    parser.add_argument("--trials", type=int, default=20, help="max_trials of every search (default 20)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every trial (default 20)")
    parser.add_argument(
        "--train-rows", type=int, help="train on this many of the 1,077 training rows (default: all)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of: {', '.join(VARIANTS)} (default: all)",
    )
    args = parser.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variant_list) - set(VARIANTS)
    if unknown or not args.variant_list:
        parser.error(f"--variants takes a comma-separated list of {', '.join(VARIANTS)}")
    if min(args.seeds, args.trials, args.epochs) < 1:
        parser.error("--seeds, --trials and --epochs must be at least 1")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run every variant for every seed (seed by seed), print the medians and the verdict."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    logs = RESULTS / f"{stamp}-search-quality-logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}-search-quality.json"
    print(f"logs in {logs.relative_to(ROOT)}", flush=True)
    data = digits_split(args.train_rows)
    data_path = logs / "test.json"
    data_path.write_text(json.dumps({"x": data["test"][0], "y": data["test"][1]}))
    test = (np.asarray(data["test"][0]), np.asarray(data["test"][1]))
    sizes = {part: len(rows[1]) for part, rows in data.items()}
    print(f"digits {sizes}; {args.trials} trials x {args.epochs} epochs; seeds 1-{args.seeds}", flush=True)
    outcomes: list[Outcome] = []
    report: dict[str, Any] = {
        "started": stamp,
        "options": {k: getattr(args, k) for k in ("seeds", "trials", "epochs", "train_rows", "variant_list")},
        "rows": sizes,
        "pruning": {"median": MEDIAN, "asha": ASHA},
    }

    def save() -> None:
        _, verdict, figures = summary(outcomes)
        report.update(
            environment=environment(),
            outcomes=[asdict(o) for o in outcomes],
            summary=figures,
            verdict=verdict,
        )
        out.write_text(json.dumps(report, indent=2))

    try:
        with ktune_stack("fast", logs, "search-quality", {}, concurrency=1) as stack:
            for seed in range(1, args.seeds + 1):
                for variant in args.variant_list:
                    tuner = VARIANTS[variant]
                    request = request_for(
                        tuner or {"algorithm": "random"}, seed, args.trials, args.epochs, data
                    )
                    warn_if_busy(f"{variant}, seed {seed}")
                    if tuner is None:
                        request_path = logs / f"request-{seed}.json"
                        request_path.write_text(json.dumps(request))
                        outcome = run_variant_bare(request_path, data_path, logs, seed)
                    else:
                        outcome = run_variant_ktune(stack, variant, request, test, logs)
                    outcomes.append(outcome)
                    save()
                    print(
                        f"seed {seed} {variant:20} {outcome.status}: "
                        f"best {fmt(outcome.best_objective, '.4f')}, "
                        f"test {fmt(outcome.test_accuracy, '.4f')}, {outcome.epochs} epochs "
                        f"({outcome.pruned} pruned), {outcome.wall_s:.1f} s",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    text, verdict, _ = summary(outcomes)
    print(f"\nmedians over seeds ({args.trials} trials x {args.epochs} epochs):\n{text}\n")
    print("\n".join(verdict))
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0 if all(o.status == "succeeded" for o in outcomes) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        bare_search(*(Path(p) for p in sys.argv[2:5]))
    else:
        sys.exit(main())
