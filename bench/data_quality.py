"""What the built-in data sets' searches give with ktune's data handling, against the old behaviour.

The issue that added data sets measured three problems of feeding raw rows to a search: unscaled regression
targets (diabetes, 25-346) left many trials worse than predicting the training mean, unscaled features
(breast_cancer, 0.05 to 2,500) hurt accuracy, and holding out the last rows of a file sorted by class
(iris) validated on one class only. This runs the same searches through the same API twice, in one run
and on one stack (a private redis-server, the API and one worker `-c 2`, from bench/run.py):

- now: the defaults (targets and features standardized inside the model; a seeded, shuffled split,
  stratified for classifiers);
- before: `"preprocessing": false` (and for iris also `"shuffle": false`), which reproduce the old
  behaviour.

Both sides of a search are posted together and run side by side. Searches:

1. diabetes, regression: 12 random trials (seed 1) of 40 epochs, and a hyperband search (max_epochs 27,
   factor 3, max_trials 58: its first two brackets). For every completed trial, whether its best epoch's
   `val_mean_absolute_error` (in the target's units on both sides) is worse than the MAE of predicting
   the training targets' mean for the job's validation rows. Those rows are recomputed from the job's
   `data.split` with `split_rows` on the built-in table and checked against the split's checksum. As a
   check that the metric is in the target's units, the best model is downloaded and its MAE on those
   rows recomputed from its predictions. Hyperband's trials are also counted by the epochs they trained.
2. breast_cancer, binary: 12 random trials of 30 epochs; best and median `val_accuracy`.
3. iris, multiclass: 12 random trials of 40 epochs, before with `"shuffle": false` too; the best trial's
   `accuracy` and `val_accuracy`, and the job's `data.warnings`.

Every job sets `limits.max_failed_trials` to its trial count so that diverging trials (NaN) are counted
rather than ending the search.

Run from the repository root: `PYTHONPATH=. .venv/bin/python bench/data_quality.py [--quick]`.
Logs go to bench/results/<date>-<time>-data-quality-logs, figures to
bench/results/<date>-<time>-data-quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, ROOT, Stack, environment, ktune_stack, tail

from service.core.datasets import builtin_table
from service.core.splits import rows_checksum, split_rows

SEED = 1
POLL_SECONDS = 0.5
JOB_TIMEOUT = 1800.0
TERMINAL = {"succeeded", "failed", "cancelled"}

# The space of every search: what a user would try first on a small tabular set.
MODEL: dict[str, Any] = {
    "architecture": "mlp",
    "hidden_layers": {"min": 1, "max": 3},
    "units": {"min": 16, "max": 128, "step": 16},
}
OPTIMIZER: dict[str, Any] = {
    "name": {"values": ["adam", "sgd"]},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
}


@dataclass(frozen=True)
class Search:
    """One search, run on both sides: `before` is what the old behaviour needs in `data`."""

    key: str
    dataset: str
    task: str
    algorithm: str
    trials: int
    epochs: int
    before: dict[str, Any]
    hyperband: dict[str, Any] = field(default_factory=dict)

    def request(self, side: str) -> dict[str, Any]:
        """The job body of one side ("now" or "before")."""
        data: dict[str, Any] = {"dataset": self.dataset}
        if side == "before":
            data.update(self.before)
        return {
            "name": f"data-quality-{self.key}-{side}",
            "task": self.task,
            "data": data,
            "model": MODEL,
            "optimizer": OPTIMIZER,
            "training": {"epochs": self.epochs, "batch_size": 32},
            "tuner": {"algorithm": self.algorithm, "max_trials": self.trials, "seed": SEED, **self.hyperband},
            "limits": {"max_failed_trials": self.trials},
        }


def searches(quick: bool) -> list[Search]:
    """The four searches; `quick` cuts trials and epochs for a smoke test of the script."""
    unscaled = {"preprocessing": False}
    if quick:
        return [
            Search("diabetes-random", "diabetes", "regression", "random", 3, 5, unscaled),
            Search("diabetes-hyperband", "diabetes", "regression", "hyperband", 8, 9, unscaled,
                   {"max_epochs": 3, "factor": 3}),
            Search("breast_cancer", "breast_cancer", "binary_classification", "random", 3, 5, unscaled),
            Search("iris", "iris", "multiclass_classification", "random", 3, 5,
                   {"preprocessing": False, "shuffle": False}),
        ]
    return [
        Search("diabetes-random", "diabetes", "regression", "random", 12, 40, unscaled),
        # max_trials 58 is hyperband's first two brackets at max_epochs 27, factor 3: 27+9+3+1 trials of
        # 1, 3, 9, 27 epochs, then 12+4+2 of 3, 9, 27.
        Search("diabetes-hyperband", "diabetes", "regression", "hyperband", 58, 27, unscaled,
               {"max_epochs": 27, "factor": 3}),
        Search("breast_cancer", "breast_cancer", "binary_classification", "random", 12, 30, unscaled),
        Search("iris", "iris", "multiclass_classification", "random", 12, 40,
               {"preprocessing": False, "shuffle": False}),
    ]


# ---- running jobs -------------------------------------------------------------------------------------


@dataclass
class Finished:
    """A job as it ended: its resource, its trials and the client's wall time."""

    side: str
    job: dict[str, Any]
    trials: list[dict[str, Any]]
    wall_s: float
    best_model: bytes = b""


def run_pair(stack: Stack, search: Search) -> dict[str, Finished]:
    """POST both sides of a search, poll both to a terminal status; raise if either did not succeed."""
    begun = time.perf_counter()
    ids: dict[str, str] = {}
    for side in ("now", "before"):
        response = stack.client.post("/v1/jobs", json=search.request(side))
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs ({search.key}, {side}) answered {response.status_code}: "
                               f"{response.text[:2000]}")
        ids[side] = response.json()["id"]
    done: dict[str, Finished] = {}
    deadline = time.monotonic() + JOB_TIMEOUT
    while len(done) < len(ids):
        for side, job_id in ids.items():
            if side in done:
                continue
            job = stack.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                trials = stack.client.get(f"/v1/jobs/{job_id}/trials", params={"history": "false"}).json()
                done[side] = Finished(side, job, trials["items"], time.perf_counter() - begun)
                if job["status"] == "succeeded" and search.task == "regression":
                    model = stack.client.get(f"/v1/jobs/{job_id}/artifacts/best-model")
                    model.raise_for_status()
                    done[side].best_model = model.content
        if stack.worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {stack.worker.returncode} during {search.key}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{search.key}: jobs {ids} not finished after {JOB_TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)
    for side, finished in done.items():
        if finished.job["status"] != "succeeded":
            worker_log = stack.logs / "data-quality-worker.log"
            raise RuntimeError(f"{search.key} ({side}) job {ids[side]} {finished.job['status']}: "
                               f"{finished.job.get('error')}\n{worker_log}:\n{tail(worker_log)}")
    return done


# ---- what the jobs found ------------------------------------------------------------------------------


def regression_rows(job: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The job's training and validation rows (x, y) of its built-in set, as the job split them.

    The rows are recomputed from the job's recorded split and checked against its checksum. Raises
    RuntimeError when they differ (the figures would be for other rows).
    """
    data = job["data"]
    split_info = data["split"]
    table = builtin_table(data["dataset"])
    x = np.column_stack([table.column(f["name"]).to_numpy() for f in data["features"]])
    y = table.column(data["target"]).to_numpy().astype(np.float64)
    if split_info["method"] != "validation_split" or split_info["stratified"]:
        raise RuntimeError(f"unexpected split of job {job['id']}: {split_info}")
    split = split_rows(len(y), split_info["fraction"], split_info["seed"] or 0, split_info["shuffle"])
    if rows_checksum(split.train, split.validation) != split_info["checksum"]:
        raise RuntimeError(f"the split of job {job['id']} could not be reproduced: {split_info}")
    return x[split.train], y[split.train], x[split.validation], y[split.validation]


def best_model_mae(model_bytes: bytes, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """The downloaded best model's MAE on the validation rows: a check that the trial's metric is in the
    target's units (the model takes raw rows and predicts in those units)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # imported here: only this check needs TensorFlow in the benchmark's process

    with tempfile.TemporaryDirectory(prefix="ktune-dq-") as temp:
        path = Path(temp) / "best.keras"
        path.write_bytes(model_bytes)
        model = keras.models.load_model(path)
    # Called, not model.predict: one batch, and no tf.function traced per model. The saved models nest
    # their one input differently (a list without preprocessing, a bare input with it); Keras warns about
    # either array form for one of them and flattens it all the same.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        predicted = np.asarray(model(x_val.astype(np.float32), training=False), dtype=np.float64).ravel()
    return float(np.mean(np.abs(predicted - y_val)))


def completed(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [trial for trial in trials if trial["status"] == "completed"]


def regression_figures(finished: Finished) -> dict[str, Any]:
    """How many trials ended worse than the mean predictor (in all, and by epochs trained for hyperband),
    the best and median val MAE, and the best model's MAE recomputed from its predictions."""
    _, y_train, x_val, y_val = regression_rows(finished.job)
    baseline = float(np.mean(np.abs(y_val - y_train.mean())))
    done = completed(finished.trials)
    maes = [trial["metrics"]["val_mean_absolute_error"] for trial in done]
    by_epochs: dict[str, list[int]] = {}
    for trial, mae in zip(done, maes, strict=True):
        epochs = trial["hyperparameters"].get("tuner/epochs")
        if epochs is not None:
            counts = by_epochs.setdefault(str(epochs), [0, 0])
            counts[0] += mae >= baseline
            counts[1] += 1
    best = finished.job["best_trial"]
    return {
        "mean_predictor_val_mae": baseline,
        "trials": len(finished.trials),
        "completed": len(done),
        "failed": len(finished.trials) - len(done),
        "worse_than_mean": sum(mae >= baseline for mae in maes),
        "worse_than_mean_by_epochs": {k: by_epochs[k] for k in sorted(by_epochs, key=int)},
        "best_val_mae": min(maes),
        "median_val_mae": statistics.median(maes),
        "best_trial_val_mae": best["metrics"]["val_mean_absolute_error"],
        "best_model_val_mae": best_model_mae(finished.best_model, x_val, y_val),
        "errors": sorted({(t.get("error") or {}).get("code", "?") for t in finished.trials
                          if t["status"] != "completed"}),
    }


def classification_figures(finished: Finished) -> dict[str, Any]:
    """Best and median val_accuracy, the best trial's accuracy and val_accuracy, and the warnings."""
    done = completed(finished.trials)
    accuracies = [trial["metrics"]["val_accuracy"] for trial in done]
    best = finished.job["best_trial"]
    return {
        "trials": len(finished.trials),
        "completed": len(done),
        "failed": len(finished.trials) - len(done),
        "best_val_accuracy": max(accuracies),
        "median_val_accuracy": statistics.median(accuracies),
        "best_trial_accuracy": best["metrics"]["accuracy"],
        "best_trial_val_accuracy": best["metrics"]["val_accuracy"],
        "best_trial_id": best["id"],
    }


def describe_data(job: dict[str, Any]) -> dict[str, Any]:
    """The job's data section, less its feature list."""
    return {key: value for key, value in job["data"].items() if key != "features"}


def figures_of(search: Search, finished: Finished) -> dict[str, Any]:
    figures = (regression_figures if search.task == "regression" else classification_figures)(finished)
    figures.update({
        "job_id": finished.job["id"],
        "wall_s": finished.wall_s,
        "objective": finished.job["objective"],
        "metrics": finished.job["spec"]["training"]["metrics"],
        "data": describe_data(finished.job),
        "trial_records": [
            {key: trial.get(key) for key in ("id", "status", "hyperparameters", "objective_value", "metrics",
                                             "duration_seconds", "error")}
            for trial in finished.trials
        ],
    })
    return figures


# ---- the tables ---------------------------------------------------------------------------------------


def split_words(data: dict[str, Any]) -> str:
    """How the job's data was fed: scaling, and the split with its row counts."""
    split = data["split"]
    how = "last rows" if not split["shuffle"] else ("shuffled, stratified" if split["stratified"] else
                                                    "shuffled")
    options = data.get("preprocessing") or {}
    scaled = "standardized" if options.get("standardize") else "raw features"
    if options.get("scale_target"):
        scaled += ", scaled target"
    return f"{scaled}; {how} {split['train_rows']}/{split['validation_rows']}"


def label(search: Search) -> str:
    return f"{search.dataset}, {search.algorithm} {search.trials} trials x {search.epochs} epochs"


def tables(results: list[dict[str, Any]]) -> str:
    """Two markdown tables, regression and classification: one row per search and side."""
    regression = [
        "| search | side | data | trials worse than the training mean | by epochs trained | "
        "val MAE best / median | best trial's val MAE (its model's, recomputed) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    classification = [
        "| search | side | data | val_accuracy best / median | best trial: accuracy / val_accuracy | "
        "data.warnings |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        search: Search = result["search"]
        for side in ("before", "now"):
            f = result[side]
            failed = f" ({f['failed']} failed)" if f["failed"] else ""
            if search.task == "regression":
                by_epochs = ", ".join(f"{epochs}: {worse}/{count}"
                                      for epochs, (worse, count) in f["worse_than_mean_by_epochs"].items())
                regression.append(
                    f"| {label(search)} | {side} | {split_words(f['data'])} | {f['worse_than_mean']} of "
                    f"{f['completed']}{failed} (mean's val MAE {f['mean_predictor_val_mae']:.2f}) | "
                    f"{by_epochs or '-'} | {f['best_val_mae']:.2f} / {f['median_val_mae']:.2f} | "
                    f"{f['best_trial_val_mae']:.2f} ({f['best_model_val_mae']:.2f}) |"
                )
            else:
                warnings = " ".join(f["data"].get("warnings") or []) or "none"
                classification.append(
                    f"| {label(search)} | {side} | {split_words(f['data'])} | {f['best_val_accuracy']:.4f} / "
                    f"{f['median_val_accuracy']:.4f}{failed} | {f['best_trial_accuracy']:.4f} / "
                    f"{f['best_trial_val_accuracy']:.4f} | {warnings} |"
                )
    return "\n".join([*regression, "", *classification])


# ---- the run ------------------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run every search on both sides, print the table and write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 trials of 5 epochs: a smoke test")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # tear down like Ctrl-C
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    logs = RESULTS / f"{stamp}-data-quality-logs"
    logs.mkdir(parents=True, exist_ok=True)
    say(f"logs in {logs.relative_to(ROOT)}")
    results: list[dict[str, Any]] = []
    begun = time.perf_counter()
    try:
        say("starting redis-server, the API and one worker (-c 2) ...")
        with ktune_stack("fast", logs, "data-quality", {}) as stack:
            for search in searches(args.quick):
                say(f"{search.key}: {search.algorithm}, {search.trials} trials x {search.epochs} epochs, "
                    "both sides at once ...")
                done = run_pair(stack, search)
                result: dict[str, Any] = {"search": search}
                for side, finished in done.items():
                    result[side] = figures_of(search, finished)
                    say(f"   {side}: {finished.wall_s:.0f} s, {len(finished.trials)} trials")
                results.append(result)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    took = time.perf_counter() - begun
    env = environment()
    out = RESULTS / f"{stamp}-data-quality.json"
    out.write_text(json.dumps({
        "started": stamp,
        "quick": args.quick,
        "wall_s": took,
        "environment": env,
        "results": [{**r, "search": asdict(r["search"])} for r in results],
    }, indent=2))
    say("")
    say(tables(results))
    say("")
    for result in results:
        for side in ("before", "now"):
            f = result[side]
            say(f"{result['search'].key} {side}: objective {f['objective']}, metrics {f['metrics']}, "
                f"preprocessing {f['data'].get('preprocessing')}, split {f['data']['split']}")
    say(f"whole run {took:.0f} s; environment: {json.dumps(env)}")
    say(f"figures: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
