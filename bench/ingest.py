"""Uploading a large CSV: ktune's ingest against pandas' read_csv, then one trial epoch against model.fit.

Generates a seeded 1,000,000-row x 20-column CSV (19 float features on scales from 1e-4 to 1e6, and a 0/1
`label` the features decide), then, in one run and with one stack (a private redis-server, the API and
one worker `-c 1`, from bench/run.py):

1. pandas.read_csv of the file in a fresh process, ktune's ingest() alone in a fresh process (what the
   API runs after receiving the file), and ktune's `POST /v1/datasets` of it (streamed by httpx),
   alternately, `--rounds` (3) rounds each: wall time of the read / of the POST, and peak RSS (VmHWM) of
   the pandas / ingest process, and of the API process (sampled every 20 ms, and its VmHWM, reset before
   each upload). Goals: ingest faster than read_csv, API peak under 500 MB.
2. One epoch of the same MLP (19 -> 64 relu -> 64 relu -> 1 sigmoid, adam 1e-3, batch 1024, 20% held
   out): bare `model.fit` on the CSV's arrays in a fresh process (TensorFlow imported before the clock
   starts), and one ktune trial on the uploaded data set (the worker's pool process is warm).

Run from the repository root: `PYTHONPATH=. .venv/bin/python bench/ingest.py [--rows N] [--rounds N]
[--loop fast|fit]`.
Logs go to bench/results/<date>-<time>-ingest-logs, figures to bench/results/<date>-<time>-ingest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    MB,
    RESULTS,
    ROOT,
    Stack,
    environment,
    ktune_stack,
    rss,
    run_ktune,
    started,
    tail,
)

FEATURES = 19
TARGET = "label"
SEED = 1
EPOCHS = 1
BATCH_SIZE = 1024
UNITS = 64
LEARNING_RATE = 1e-3
VALIDATION = 0.2
SAMPLE_SECONDS = 0.02
GOAL_RSS_MB = 500
UPLOAD_TIMEOUT = 600.0
CHILD_TIMEOUT = 600.0
SETTLE_TIMEOUT = 60.0


# ---- the file -----------------------------------------------------------------------------------------


def feature_names() -> list[str]:
    return [f"f{i:02d}" for i in range(FEATURES)]


def generate_csv(path: Path, rows: int) -> None:
    """Write the seeded CSV: features on very different scales (so standardizing matters) and a label
    decided by a few of them, one interaction included, with some noise."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(SEED)
    scales = 10.0 ** np.linspace(-4, 6, FEATURES)
    columns: dict[str, Any] = {}
    z = rng.standard_normal((FEATURES, rows))
    for name, scale, row in zip(feature_names(), scales, z, strict=True):
        offset = scale * rng.uniform(-3, 3)
        # About seven significant digits: the file is ~200 bytes a row.
        decimals = max(0, 6 - math.floor(math.log10(scale)))
        columns[name] = np.round(offset + scale * row, decimals)
    score = z[0] - z[3] + 0.8 * z[7] * z[12] + 0.5 * z[15] + 0.3 * rng.standard_normal(rows)
    columns[TARGET] = (score > 0).astype(np.int8)
    pa_csv.write_csv(pa.table(columns), path)


# ---- child processes: pandas.read_csv, ingest() alone, bare model.fit ---------------------------------


def max_rss_mb() -> float:
    """This process's peak RSS so far: VmHWM, not ru_maxrss, which on Linux keeps the parent's peak
    across fork and exec (a child of this 460 MB benchmark process reported 460 MB before doing anything)."""
    return proc_status_mb(os.getpid(), "VmHWM") or 0.0


def child_pandas(csv: Path) -> dict[str, Any]:
    """pandas.read_csv of the file; the clock and RSS after importing pandas are reported apart."""
    import pandas as pd

    after_import = max_rss_mb()
    begun = time.perf_counter()
    frame = pd.read_csv(csv)
    wall = time.perf_counter() - begun
    return {"wall_s": wall, "rows": len(frame), "peak_rss_mb": max_rss_mb(),
            "rss_after_import_mb": after_import}


def child_ingest(csv: Path) -> dict[str, Any]:
    """ktune's ingest alone (service.core.datasets.ingest, as the API calls it), without HTTP or copies."""
    from service.core import datasets

    after_import = max_rss_mb()
    dest = csv.with_name(f"{csv.stem}-{os.getpid()}.arrow")
    try:
        begun = time.perf_counter()
        info = datasets.ingest(csv, csv.name, dest)
        wall = time.perf_counter() - begun
    finally:
        dest.unlink(missing_ok=True)
    return {"wall_s": wall, "rows": info.rows, "peak_rss_mb": max_rss_mb(),
            "rss_after_import_mb": after_import}


def child_fit(csv: Path) -> dict[str, Any]:
    """The same MLP as the ktune job, one epoch of model.fit on the CSV's arrays, standardized."""
    import keras
    import pyarrow.csv as pa_csv

    begun = time.perf_counter()
    table = pa_csv.read_csv(csv)
    read = time.perf_counter()
    x = np.column_stack([table.column(name).to_numpy() for name in feature_names()]).astype(np.float32)
    y = table.column(TARGET).to_numpy().astype(np.float32)
    del table
    order = np.random.default_rng(SEED).permutation(len(x))
    cut = len(x) - math.ceil(len(x) * VALIDATION)
    x_train, y_train, x_val, y_val = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    del x, y
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    loaded = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(UNITS, activation="relu"),
        keras.layers.Dense(UNITS, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="binary_crossentropy",
                  metrics=["accuracy"])
    built = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE,
                        validation_data=(x_val, y_val), verbose=0)
    done = time.perf_counter()
    return {
        "load_s": loaded - begun,
        "read_s": read - begun,  # of load_s: pyarrow's read_csv; the rest makes float32 arrays and splits
        "build_s": built - loaded,
        "fit_s": done - built,
        "total_s": done - begun,
        "train_rows": len(x_train),
        "validation_rows": len(x_val),
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "peak_rss_mb": max_rss_mb(),
    }


CHILDREN = {"pandas": child_pandas, "ingest": child_ingest, "fit": child_fit}


def run_child(kind: str, csv: Path, logs: Path, label: str) -> dict[str, Any]:
    """Run one measurement in a fresh process of this script; stopped if we are interrupted."""
    out = logs / f"{label}.json"
    log = logs / f"{label}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(csv), str(out)]
    with started(argv, log, env) as process:
        try:
            process.wait(CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{label} took over {CHILD_TIMEOUT:.0f} s") from None
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"{label} exited with {process.returncode}; {log}:\n{tail(log)}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# ---- ktune: the upload and the trial ------------------------------------------------------------------


class PeakSampler(threading.Thread):
    """Peak RSS of one process, sampled every SAMPLE_SECONDS until stopped (and of it with its children)."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.process = process
        self.peak = 0
        self.peak_tree = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            own = rss(self.process)
            with contextlib.suppress(psutil.Error):
                own_tree = own + sum(rss(child) for child in self.process.children(recursive=True))
                self.peak_tree = max(self.peak_tree, own_tree)
            self.peak = max(self.peak, own)
            self.samples += 1
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def proc_status_mb(pid: int, field: str) -> float | None:
    """A kB field of /proc/<pid>/status (VmHWM: peak RSS, VmRSS) in MB; None where unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5), so it measures one upload."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Upload:
    """One POST /v1/datasets as the client saw it and the API process's memory meanwhile."""

    wall_s: float
    rss_before_mb: float
    peak_rss_mb: float
    peak_tree_rss_mb: float
    vm_hwm_mb: float | None
    hwm_reset: bool
    samples: int
    dataset: dict[str, Any]


def upload(stack: Stack, csv: Path) -> Upload:
    """POST the file (streamed from disk by httpx, never read whole) and watch the API's RSS meanwhile."""
    assert stack.api is not None
    api = psutil.Process(stack.api.pid)
    hwm_reset = reset_peak(api.pid)
    before = rss(api)
    sampler = PeakSampler(api)
    sampler.start()
    try:
        begun = time.perf_counter()
        with csv.open("rb") as file:
            response = stack.client.post(
                "/v1/datasets", files={"file": (csv.name, file, "text/csv")}, timeout=UPLOAD_TIMEOUT
            )
        wall = time.perf_counter() - begun
    finally:
        sampler.stop()
    if response.status_code != 201:
        api_log = stack.logs / "ingest-api.log"
        raise RuntimeError(
            f"POST /v1/datasets answered {response.status_code}: {response.text[:2000]}\n"
            f"{api_log}:\n{tail(api_log)}"
        )
    return Upload(
        wall_s=wall,
        rss_before_mb=before / MB,
        peak_rss_mb=sampler.peak / MB,
        peak_tree_rss_mb=sampler.peak_tree / MB,
        vm_hwm_mb=proc_status_mb(api.pid, "VmHWM"),
        hwm_reset=hwm_reset,
        samples=sampler.samples,
        dataset=response.json(),
    )


def job_request(dataset_id: str) -> dict[str, Any]:
    """One trial of fixed hyperparameters, the same model and training as child_fit's."""
    return {
        "name": "ingest-bench",
        "task": "binary_classification",
        "data": {"dataset": dataset_id, "target": TARGET, "validation_split": VALIDATION},
        "model": {"architecture": "mlp", "hidden_layers": 2, "units": UNITS, "activation": "relu",
                  "dropout": 0.0},
        "optimizer": {"name": "adam", "learning_rate": LEARNING_RATE},
        "training": {"epochs": EPOCHS, "batch_size": BATCH_SIZE},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "tuner": {"algorithm": "random", "max_trials": 1, "seed": SEED},
    }


# ---- the run ------------------------------------------------------------------------------------------


def load() -> list[float]:
    """Load averages (1, 5, 15 min), printed before each side: timings are only as quiet as the machine."""
    return [round(value, 2) for value in os.getloadavg()]


def say(text: str) -> None:
    print(text, flush=True)


def tree_cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time (user + system) used so far by these processes and their children."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            for member in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = member.cpu_times()
                    total += times.user + times.system
    return total


def settle(stack: Stack) -> None:
    """Wait until the worker and the API are idle: the pool process still imports Keras and keras-tuner
    for a few seconds after TensorFlow's library is mapped (what ktune_stack waits for), on our 2 cores."""
    processes = [psutil.Process(stack.worker.pid)]
    if stack.api is not None:
        processes.append(psutil.Process(stack.api.pid))
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        used = tree_cpu_seconds(processes)
        time.sleep(1.0)
        if tree_cpu_seconds(processes) - used < 0.05:
            return
    say(f"   note: the worker or the API still used CPU after {SETTLE_TIMEOUT:.0f} s; measuring anyway")


def read_child(kind: str, csv: Path, rows: int, logs: Path, label: str) -> dict[str, Any]:
    """One pandas or ingest-alone read in a fresh process, checked to have read every row."""
    result = run_child(kind, csv, logs, label)
    if result["rows"] != rows:
        raise RuntimeError(f"{label} read {result['rows']} rows, not {rows}")
    say(f"   {result['wall_s']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


def measure(csv: Path, rows: int, rounds: int, loop: str, logs: Path) -> dict[str, Any]:
    """Everything in the module docstring, in order; returns the figures."""
    figures: dict[str, Any] = {"pandas": [], "ingest": [], "uploads": [], "loads": {}}
    loads = figures["loads"]
    say("starting redis-server, the API and one worker (-c 1) ...")
    with ktune_stack(loop, logs, "ingest", {}, concurrency=1) as stack:
        settle(stack)
        for round_ in range(1, rounds + 1):
            loads[f"pandas {round_}"] = load()
            say(f"round {round_}: pandas.read_csv in a fresh process (load {load()}) ...")
            figures["pandas"].append(read_child("pandas", csv, rows, logs, f"pandas-{round_}"))
            loads[f"ingest {round_}"] = load()
            say(f"round {round_}: ktune's ingest() alone in a fresh process (load {load()}) ...")
            figures["ingest"].append(read_child("ingest", csv, rows, logs, f"ingest-{round_}"))
            loads[f"upload {round_}"] = load()
            say(f"round {round_}: POST /v1/datasets (load {load()}) ...")
            done = upload(stack, csv)
            if done.dataset["rows"] != rows or len(done.dataset["columns"]) != FEATURES + 1:
                raise RuntimeError(f"the data set has {done.dataset['rows']} rows, "
                                   f"{len(done.dataset['columns'])} columns")
            figures["uploads"].append(done)
            say(f"   {done.wall_s:.2f} s, API RSS {done.rss_before_mb:.0f} MB before, peak "
                f"{done.peak_rss_mb:.0f} MB sampled ({done.samples} samples), VmHWM {done.vm_hwm_mb} MB")
        loads["fit"] = load()
        say(f"bare model.fit, one epoch, in a fresh process (load {load()}) ...")
        fit = run_child("fit", csv, logs, "fit")
        figures["fit"] = fit
        say(f"   load {fit['load_s']:.2f} s + fit {fit['fit_s']:.2f} s, "
            f"val_accuracy {fit['val_accuracy']:.4f}")
        loads["ktune trial"] = load()
        say(f"ktune job, one trial of one epoch (load {load()}) ...")
        job = run_ktune(stack, job_request(figures["uploads"][0].dataset["id"]), loop)
        if job.status != "succeeded":
            worker_log = logs / "ingest-worker.log"
            raise RuntimeError(
                f"job {job.job_id} {job.status}: {job.error}\n{worker_log}:\n{tail(worker_log)}"
            )
        figures["ktune"] = job
        figures["ktune_data"] = stack.client.get(f"/v1/jobs/{job.job_id}").json().get("data")
        say(f"   trial {job.trial_durations_s[0]:.2f} s, POST->succeeded {job.wall_s:.2f} s, "
            f"val_accuracy {job.best_objective:.4f}")
    return figures


def ratio(ktune: float, other: float) -> str:
    return f"{ktune / other:.2f}x"


def table(figures: dict[str, Any], csv_mb: float, rows: int) -> str:
    """The markdown table of the run."""
    pandas, ingest, uploads = figures["pandas"], figures["ingest"], figures["uploads"]
    fit, job = figures["fit"], figures["ktune"]
    trial = job.trial_durations_s[0]
    lines = [
        f"CSV: {rows:,} rows x {FEATURES + 1} columns, {csv_mb:.0f} MB. "
        "Ratios are ktune / baseline (under 1: ktune is faster or smaller).",
        "",
        "| measure | baseline | ktune | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for i, (read, alone, sent) in enumerate(zip(pandas, ingest, uploads, strict=True), 1):
        base = read["wall_s"]
        lines += [
            f"| round {i}: pandas.read_csv / POST /v1/datasets (client wall) | {base:.2f} s | "
            f"{sent.wall_s:.2f} s | {ratio(sent.wall_s, base)} |",
            f"| round {i}: pandas.read_csv / ingest() alone, fresh process | {base:.2f} s | "
            f"{alone['wall_s']:.2f} s | {ratio(alone['wall_s'], base)} |",
        ]
    if len(pandas) > 1:
        base = statistics.median(read["wall_s"] for read in pandas)
        posted = statistics.median(sent.wall_s for sent in uploads)
        alone_s = statistics.median(alone["wall_s"] for alone in ingest)
        lines += [
            f"| median of {len(pandas)} rounds: pandas.read_csv / POST /v1/datasets | {base:.2f} s | "
            f"{posted:.2f} s | {ratio(posted, base)} |",
            f"| median of {len(pandas)} rounds: pandas.read_csv / ingest() alone | {base:.2f} s | "
            f"{alone_s:.2f} s | {ratio(alone_s, base)} |",
        ]
    for i, (read, alone, sent) in enumerate(zip(pandas, ingest, uploads, strict=True), 1):
        hwm = "-" if sent.vm_hwm_mb is None else f"{sent.vm_hwm_mb:.0f}"
        lines += [
            f"| round {i}, peak RSS: pandas process / API process (sampled; VmHWM) | "
            f"{read['peak_rss_mb']:.0f} MB | {sent.peak_rss_mb:.0f}; {hwm} MB (goal < {GOAL_RSS_MB}) | "
            f"{ratio(sent.peak_rss_mb, read['peak_rss_mb'])} |",
            f"| round {i}, peak RSS: pandas process / ingest() process | {read['peak_rss_mb']:.0f} MB | "
            f"{alone['peak_rss_mb']:.0f} MB | {ratio(alone['peak_rss_mb'], read['peak_rss_mb'])} |",
        ]
    lines += [
        f"| RSS before reading: pandas after import / API before each upload | "
        f"{pandas[0]['rss_after_import_mb']:.0f} MB | "
        + ", ".join(f"{u.rss_before_mb:.0f}" for u in uploads) + " MB | |",
        f"| one epoch: model.fit alone / trial duration_seconds | {fit['fit_s']:.2f} s | {trial:.2f} s | "
        f"{ratio(trial, fit['fit_s'])} |",
        f"| one epoch with data loading: CSV -> arrays + build + fit / trial | {fit['total_s']:.2f} s | "
        f"{trial:.2f} s | {ratio(trial, fit['total_s'])} |",
        f"| one epoch, client side: same / POST /v1/jobs -> succeeded | {fit['total_s']:.2f} s | "
        f"{job.wall_s:.2f} s | {ratio(job.wall_s, fit['total_s'])} |",
        f"| val_accuracy after one epoch | {fit['val_accuracy']:.4f} | {job.best_objective:.4f} | |",
        f"| peak RSS: fit process / worker pool process (sampled every 0.2 s) | "
        f"{fit['peak_rss_mb']:.0f} MB | {job.peak_pool_process_rss_mb:.0f} MB | |",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV")
    parser.add_argument("--rounds", type=int, default=3, help="alternating read rounds of each side")
    parser.add_argument("--loop", choices=["fast", "fit"], default="fast", help="ktune's KTUNE_TRAINING_LOOP")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Generate the file, measure both sides, print the table and write the figures as JSON."""
    args = parse_args(argv)
    if args.child:
        kind, csv, out = args.child
        Path(out).write_text(json.dumps(CHILDREN[kind](Path(csv))))
        return 0
    signal.signal(signal.SIGTERM, _terminate)  # tear down like Ctrl-C
    stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
    logs = RESULTS / f"{stamp}-ingest-logs"
    logs.mkdir(parents=True, exist_ok=True)
    say(f"logs in {logs.relative_to(ROOT)}")
    try:
        with tempfile.TemporaryDirectory(prefix="ktune-ingest-") as temp:
            csv = Path(temp) / "ingest.csv"
            begun = time.perf_counter()
            generate_csv(csv, args.rows)
            csv_mb = csv.stat().st_size / MB
            took = time.perf_counter() - begun
            say(f"generated {csv.name}: {args.rows:,} rows, {csv_mb:.0f} MB in {took:.1f} s")
            figures = measure(csv, args.rows, args.rounds, args.loop, logs)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped and the CSV removed", file=sys.stderr)
        return 130
    env = {**environment(), "pandas": version("pandas"), "pyarrow": version("pyarrow")}
    report = {
        "started": stamp,
        "options": {"rows": args.rows, "rounds": args.rounds, "loop": args.loop},
        "csv_mb": csv_mb,
        "environment": env,
        "loads_before": figures["loads"],
        "pandas": figures["pandas"],
        "ingest_alone": figures["ingest"],
        "uploads": [{**asdict(u), "dataset": {"id": u.dataset["id"], "rows": u.dataset["rows"]}}
                    for u in figures["uploads"]],
        "fit": figures["fit"],
        "ktune": asdict(figures["ktune"]),
        "ktune_data": figures["ktune_data"],
    }
    out = RESULTS / f"{stamp}-ingest.json"
    out.write_text(json.dumps(report, indent=2))
    say("")
    say(table(figures, csv_mb, args.rows))
    say("")
    say("load averages (1, 5, 15 min) before each side: "
        + "; ".join(f"{side} {values}" for side, values in figures["loads"].items()))
    say(f"environment: {json.dumps(env)}")
    say(f"figures: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
