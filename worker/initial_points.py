"""How many random trials a Bayesian search runs before its Gaussian process suggests the next ones."""

from __future__ import annotations

from service.core.spec import TunerSpec


def default_initial_points(dimensions: int, max_trials: int) -> int:
    """keras-tuner's 3 x dimensions, capped at a quarter of the trial budget, and at least 3.

    keras-tuner's rule alone (3 per tuned hyperparameter) spends a small budget at random: the README's
    Bayesian example tunes 8 hyperparameters in 12 trials, and would never use its model. A quarter of
    the budget leaves the model most of it, as Optuna's TPE (10 start-up trials) does for typical
    budgets; 3 points are the fewest a Gaussian process fit says anything from.
    """
    return max(3, min(3 * dimensions, max_trials // 4))


def initial_points(tuner: TunerSpec, dimensions: int) -> int:
    """The job's `tuner.num_initial_points`, or the default for a space of `dimensions` hyperparameters."""
    if tuner.num_initial_points is not None:
        return tuner.num_initial_points
    return default_initial_points(dimensions, tuner.max_trials)
