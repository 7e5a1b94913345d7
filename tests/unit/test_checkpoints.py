"""An execution stopped at an epoch checkpoint and continued from it trains as if never stopped."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from service.core.records import ExecutionRecord
from tests.unit.test_fast_training import (
    REGRESSION,
    XOR,
    _assert_same_history,
    _assert_same_weights,
    _classifier,
    _compile_classifier,
    _compile_regressor,
    _compiled,
    _never,
    _regressor,
    _regressor_of,
    _twins,
)
from worker.checkpoints import Checkpointer, TrialCheckpoint, load_checkpoint, save_checkpoint
from worker.fast_training import fast_fit_execution, trainer_for
from worker.training import ExecutionResult, ExecutionState, FitOptions, fit_execution

STOP_AT = 11  # the epoch after which the first worker is lost


class _StopAndKeep:
    """Stops training after STOP_AT like a shutdown does, keeping the checkpoint the trainer offers then."""

    def __init__(self) -> None:
        self.state: ExecutionState | None = None
        self.offers = 0

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> bool:
        return epoch >= STOP_AT

    def checkpoint(self, capture: object) -> None:
        self.offers += 1
        assert callable(capture)
        self.state = capture()


def _through_a_file(state: ExecutionState, tmp_path: Path) -> ExecutionState:
    """What the next worker reads: the state written to the artifact store and loaded back."""
    path = tmp_path / "trial.resume.npz"
    save_checkpoint(path, TrialCheckpoint([], state))
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded.current is not None
    return loaded.current


def _other_classifier() -> keras.Model:
    """Same architecture, other initial weights: a resumed model must not depend on its own."""
    keras.utils.set_random_seed(99)
    model = _classifier()
    _compile_classifier(model)
    return model


@pytest.mark.parametrize("chunk_seconds", [1e-6, 10.0], ids=["one-epoch-chunks", "stop-mid-chunk"])
def test_fast_loop_continues_exactly_where_it_stopped(tmp_path: Path, chunk_seconds: float) -> None:
    options = FitOptions(epochs=40, batch_size=3, monitor="val_loss", mode="min", shuffle=True, patience=25)
    uninterrupted_model, first_model = _twins(_classifier, _compile_classifier)
    keras.utils.set_random_seed(5)
    expected = fast_fit_execution(uninterrupted_model, XOR, options, _never, chunk_seconds=chunk_seconds)

    keras.utils.set_random_seed(5)
    stopper = _StopAndKeep()
    stopped = fast_fit_execution(
        first_model, XOR, options, stopper.on_epoch, stopper.checkpoint, chunk_seconds=chunk_seconds
    )
    assert stopped.cancelled and stopped.epochs_run == STOP_AT + 1
    assert stopper.state is not None and stopper.state.next_epoch == STOP_AT + 1

    state = _through_a_file(stopper.state, tmp_path)
    keras.utils.set_random_seed(123)  # the next worker's own seeds must not matter
    resumed = fast_fit_execution(_other_classifier(), XOR, options, _never, resume=state)

    assert resumed.epochs_run == expected.epochs_run == 40
    _assert_same_history(expected, resumed)
    assert resumed.best_epoch == expected.best_epoch
    assert expected.best_weights is not None and resumed.best_weights is not None
    _assert_same_weights(expected.best_weights, resumed.best_weights)


def test_a_kept_model_traced_for_other_widths_continues_a_checkpoint_exactly(tmp_path: Path) -> None:
    """The next worker may resume a trial on the model it kept from a trial of other widths."""
    options = FitOptions(epochs=30, batch_size=3, monitor="val_loss", mode="min", shuffle=True)
    uninterrupted_model, first_model = _twins(_regressor_of(16), _compile_regressor)
    keras.utils.set_random_seed(5)
    expected = fast_fit_execution(uninterrupted_model, REGRESSION, options, _never, chunk_seconds=1e-6)
    keras.utils.set_random_seed(5)
    stopper = _StopAndKeep()
    fast_fit_execution(
        first_model, REGRESSION, options, stopper.on_epoch, stopper.checkpoint, chunk_seconds=1e-6
    )
    assert stopper.state is not None

    kept = trainer_for(None, _compiled(_regressor_of(4)), lambda: _compiled(_regressor_of(4)), REGRESSION)
    fast_fit_execution(kept, REGRESSION, options, _never)  # its own trial, traced for 4 units
    fresh = _compiled(_regressor_of(16))
    trainer = trainer_for(kept, fresh, lambda: fresh, REGRESSION)
    state = _through_a_file(stopper.state, tmp_path)
    resumed = fast_fit_execution(trainer, REGRESSION, options, _never, resume=state, chunk_seconds=1e-6)

    assert trainer is kept and resumed.epochs_run == expected.epochs_run == 30
    _assert_same_history(expected, resumed)
    assert resumed.best_epoch == expected.best_epoch
    _assert_same_weights(expected.best_weights or [], resumed.best_weights or [])


def test_fast_loop_continues_its_early_stopping_count(tmp_path: Path) -> None:
    """Patience already used up before the stop still counts after it: the resumed run stops alike."""
    options = FitOptions(epochs=300, batch_size=4, monitor="val_loss", mode="min", patience=3, min_delta=0.2)
    uninterrupted_model, first_model = _twins(_regressor, _compile_regressor)
    keras.utils.set_random_seed(5)  # the same shuffles in both runs
    expected = fast_fit_execution(uninterrupted_model, REGRESSION, options, _never, chunk_seconds=1e-6)
    assert expected.stopped_early and expected.epochs_run > STOP_AT + 1

    keras.utils.set_random_seed(5)
    stopper = _StopAndKeep()
    fast_fit_execution(
        first_model, REGRESSION, options, stopper.on_epoch, stopper.checkpoint, chunk_seconds=1e-6
    )
    assert stopper.state is not None
    fresh = _regressor()
    _compile_regressor(fresh)
    resumed = fast_fit_execution(
        fresh, REGRESSION, options, _never, resume=_through_a_file(stopper.state, tmp_path)
    )

    assert resumed.stopped_early and resumed.epochs_run == expected.epochs_run
    _assert_same_history(expected, resumed)


def test_model_fit_continues_from_its_checkpoint(tmp_path: Path) -> None:
    """The reference loop restores weights, optimizer and early stopping (unshuffled, so batches match)."""
    options = FitOptions(epochs=25, batch_size=4, monitor="val_loss", mode="min", shuffle=False)
    uninterrupted_model, first_model = _twins(_regressor, _compile_regressor)
    expected = fit_execution(uninterrupted_model, REGRESSION, options, _never)

    stopper = _StopAndKeep()
    fit_execution(first_model, REGRESSION, options, stopper.on_epoch, stopper.checkpoint)
    assert stopper.state is not None and stopper.state.loop == "fit"
    fresh = _regressor()
    _compile_regressor(fresh)
    resumed = fit_execution(
        fresh, REGRESSION, options, _never, resume=_through_a_file(stopper.state, tmp_path)
    )

    assert resumed.epochs_run == 25
    _assert_same_history(expected, resumed)
    assert resumed.best_epoch == expected.best_epoch
    assert expected.best_weights is not None and resumed.best_weights is not None
    _assert_same_weights(expected.best_weights, resumed.best_weights)


def test_a_checkpoint_of_one_loop_is_refused_by_the_other(tmp_path: Path) -> None:
    stopper = _StopAndKeep()
    model, _ = _twins(_regressor, _compile_regressor)
    options = FitOptions(epochs=20, batch_size=4, monitor="val_loss", mode="min")
    fast_fit_execution(model, REGRESSION, options, stopper.on_epoch, stopper.checkpoint)
    assert stopper.state is not None
    fresh = _regressor()
    _compile_regressor(fresh)
    with pytest.raises(ValueError, match="'fast' training loop"):
        fit_execution(fresh, REGRESSION, options, _never, resume=stopper.state)


def test_finished_executions_and_records_survive_the_file(tmp_path: Path) -> None:
    weights = [np.arange(6, dtype="float32").reshape(2, 3), np.ones(3, dtype="float32")]
    finished = ExecutionResult(
        history={"loss": [1.0, float("nan"), 0.5]}, best_epoch=2, best_value=0.5, best_weights=weights
    )
    current = ExecutionState("fast", 7, {"history": {"loss": [2.0]}}, [np.full((2, 2), 3.0)])
    records = [ExecutionRecord(history={"loss": [1.0, None, 0.5]}, best_epoch=2), ExecutionRecord()]
    path = tmp_path / "t.resume.npz"
    save_checkpoint(path, TrialCheckpoint([finished], current, records, elapsed_seconds=12.5))
    loaded = load_checkpoint(path)

    assert loaded is not None and loaded.current is not None
    [back] = loaded.finished
    assert back.best_epoch == 2 and back.best_value == 0.5 and np.isnan(back.history["loss"][1])
    assert back.best_weights is not None
    _assert_same_weights(weights, back.best_weights)
    assert loaded.current.next_epoch == 7 and loaded.current.tracker == {"history": {"loss": [2.0]}}
    np.testing.assert_array_equal(loaded.current.variables[0], np.full((2, 2), 3.0))
    assert loaded.executions == records
    assert loaded.elapsed_seconds == 12.5, "a resumed trial's time limit counts its earlier running time"
    assert not list(tmp_path.glob(".*partial")), "the temporary file was renamed into place"


def test_a_missing_or_corrupt_checkpoint_means_starting_over(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "none.npz") is None
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    assert load_checkpoint(corrupt) is None


def test_the_checkpointer_writes_when_due_urgent_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "t.resume.npz"
    flags = {"urgent": False, "allowed": True}
    captured: list[int] = []

    def capture() -> ExecutionState:
        captured.append(1)
        return ExecutionState("fast", len(captured), {}, [])

    checkpointer = Checkpointer(
        path, 3600, [], [], urgent=lambda: flags["urgent"], allowed=lambda: flags["allowed"]
    )
    checkpointer(capture)
    assert not path.exists() and not captured, "not due yet: the state is not even captured"
    flags["urgent"] = True
    checkpointer(capture)
    assert path.exists() and checkpointer.saved == 1
    flags["allowed"] = False  # the lease is gone: another worker owns the trial's checkpoint now
    checkpointer(capture)
    assert checkpointer.saved == 1
    flags.update(urgent=False, allowed=True)
    every_chunk = Checkpointer(
        path, 0, [], [], urgent=lambda: False, allowed=lambda: True, elapsed=lambda: 42.0
    )
    every_chunk(capture)
    every_chunk(capture)
    assert every_chunk.saved == 2
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded.current is not None and loaded.current.next_epoch == len(captured)
    assert loaded.elapsed_seconds == 42.0


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the checkpoint's directory should be")
    checkpointer = Checkpointer(
        blocked / "t.resume.npz", 0, [], [], urgent=lambda: False, allowed=lambda: True
    )
    checkpointer(lambda: ExecutionState("fast", 1, {}, []))
    assert checkpointer.saved == 0


def test_a_checkpoint_between_executions_has_none_under_way(tmp_path: Path) -> None:
    path = tmp_path / "t.resume.npz"
    done = ExecutionResult(history={"loss": [0.5]}, best_epoch=0, best_value=0.5, best_weights=[np.ones(2)])
    checkpointer = Checkpointer(
        path, 3600, [done], [ExecutionRecord()], urgent=lambda: True, allowed=lambda: True
    )
    checkpointer.between_executions()
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded.current is None and len(loaded.finished) == 1


@pytest.mark.parametrize(
    ("epochs_run", "initial_epoch", "stopped_early", "complete"),
    [
        (10, 0, False, True),
        (9, 0, False, False),
        (4, 6, False, True),
        (3, 6, False, False),
        (2, 0, True, True),
    ],
)
def test_an_execution_is_complete_when_every_epoch_ran_or_it_stopped_early(
    epochs_run: int, initial_epoch: int, stopped_early: bool, complete: bool
) -> None:
    from worker.executions import execution_complete

    result = ExecutionResult(history={"loss": [1.0] * epochs_run}, stopped_early=stopped_early)
    options = FitOptions(epochs=10, batch_size=1, monitor="loss", mode="min", initial_epoch=initial_epoch)
    assert execution_complete(result, options) is complete
