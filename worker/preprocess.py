"""Raw table columns to the float matrix trials train on, and the same steps as Keras layers for export.

Trials train a core MLP on an encoded float32 matrix (the compiled loop in `worker.fast_training` needs one
matrix). The model a user downloads takes raw values instead: `Preprocessing.export` puts standard Keras
layers (`Normalization`, `StringLookup`, `Hashing`, `Concatenate`) in front of the trained core. Those
layers have no trainable weights, so training the core on `encode`'s output and wrapping it afterwards is
the same model; `encode` mirrors their arithmetic in numpy (float32, Keras' own formulas).

Encoding, column by column (numeric columns first, then categorical ones, each group in file order):
- numeric: `(x - mean) / max(sqrt(var), keras.backend.epsilon())`, mean and population variance of the
  train split ignoring missing cells (Keras' `Normalization`). A column with zero variance (constant in
  train) or no present train cell is scaled by 1 instead, like scikit-learn's `StandardScaler`, so a
  validation value that differs does not become a huge number. Without `standardize` values pass through.
- missing numeric cells (NaN) become the train mean with `impute="mean"`; without it `encode` refuses them.
- categorical: one-hot over [out-of-vocabulary, *sorted distinct train values]. Slot 0 takes missing cells
  (None, "" or NaN) and values never seen in train; a column without any train value is that slot alone.

The exported model, for users:
- every feature numeric: one input "features", a float32 array [rows, numeric columns] in file order.
- any feature categorical: a dict keyed by the header names, one 1-D array of rows per column; numeric
  entries float, categorical ones str. Keras' `model.predict` (3.15) rejects numpy's fixed-width str
  arrays (dtype '<U...') and 2-D object arrays (keras-team/keras#20479); 1-D dtype=object arrays (what
  pandas gives) and `tf.constant`s work, and so does calling the model directly. A missing category is ""
  (None cannot be in a string tensor).
- numeric cells must be present: imputation is not in the exported model, since Keras has no standard
  layer that replaces NaN and a Lambda layer does not load in safe mode. `summary()` lists each column's
  fill value so users can impute the same way before predicting.
- Keras input names cannot contain "/" (and must be unique among the model's layers): such a column's
  input gets another name, while its dict key stays the header name. Keras warns about the mismatch when
  the model is built and loaded but predicts correctly (checked by this module's tests).
- with `scale_target`, the core's last layers rescale to the original units (see `rescale_output`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np

from service.core.catalog import Task
from worker.training import TrainData

FeatureKind = Literal["numeric", "categorical"]

# Losses defined on the target's own units (a percentage of it, its logarithm): on standardized values
# they would divide by distances from the mean or clip negative values, so they are never standardized.
UNSCALED_LOSSES = frozenset({"mean_absolute_percentage_error", "mean_squared_logarithmic_error"})


@dataclass(frozen=True)
class FeatureColumn:
    name: str  # the column's name exactly as in the file's header
    kind: FeatureKind


@dataclass(frozen=True)
class RawSplit:
    """One job's data after its train/validation split, before encoding."""

    features: list[FeatureColumn]  # in file order
    # numeric: 1-D float64, NaN = missing; categorical: 1-D object array of str, None = missing
    x_train: dict[str, np.ndarray]
    x_val: dict[str, np.ndarray]
    y_train: np.ndarray  # 1-D: int32 class indices (classification) or float64 targets (regression)
    y_val: np.ndarray


@dataclass(frozen=True)
class PreprocessOptions:
    standardize: bool = True  # numeric features: (x - mean) / std of the TRAIN split
    impute: Literal["mean"] | None = None  # numeric missing cells -> train mean; None: none may be missing
    scale_target: bool = False  # regression: train on standardized targets; the model outputs original units


@dataclass(frozen=True)
class _Numeric:
    name: str
    mean: float  # train mean, the fill value for missing cells
    variance: float  # what Normalization divides by the root of; 1.0 for a constant or empty column


@dataclass(frozen=True)
class _Categorical:
    name: str
    vocabulary: tuple[str, ...]  # sorted distinct train values; one-hot slot i + 1


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _fit_numeric(name: str, values: np.ndarray) -> _Numeric:
    column = np.asarray(values, dtype=np.float64)
    if np.isinf(column).any():
        raise ValueError(f"column {name!r} has infinite values")
    present = column[~np.isnan(column)]
    if present.size == 0:
        return _Numeric(name, 0.0, 1.0)
    mean, variance = float(present.mean()), float(present.var())
    return _Numeric(name, mean, variance if variance > 0 and math.isfinite(variance) else 1.0)


def _fit_categorical(name: str, values: np.ndarray) -> _Categorical:
    return _Categorical(name, tuple(sorted({str(v) for v in values.tolist() if not _is_missing(v)})))


class Preprocessing:
    """What was fitted on one job's train split: column statistics, vocabularies and the target's scale."""

    def __init__(
        self,
        options: PreprocessOptions,
        numeric: list[_Numeric],
        categorical: list[_Categorical],
        target: tuple[float, float] | None,
        task: Task,
    ) -> None:
        self._options = options
        self._numeric = numeric
        self._categorical = categorical
        self._target = target
        self._task = task

    @classmethod
    def fit(cls, raw: RawSplit, options: PreprocessOptions, task: Task) -> Preprocessing:
        """Statistics of `raw`'s train split. Raises ValueError without features or with infinite values."""
        if not raw.features:
            raise ValueError("no feature columns")
        numeric = [_fit_numeric(f.name, raw.x_train[f.name]) for f in raw.features if f.kind == "numeric"]
        categorical = [
            _fit_categorical(f.name, raw.x_train[f.name]) for f in raw.features if f.kind == "categorical"
        ]
        target = None
        if task is Task.REGRESSION and options.scale_target:
            y = np.asarray(raw.y_train, dtype=np.float64)
            mean, std = float(y.mean()), float(y.std())
            target = (mean, std if std > 0 and math.isfinite(std) else 1.0)
        return cls(options, numeric, categorical, target, task)

    @property
    def width(self) -> int:
        """Columns of the encoded matrix."""
        return len(self._numeric) + sum(len(c.vocabulary) + 1 for c in self._categorical)

    def _numeric_matrix(self, columns: dict[str, np.ndarray], rows: int) -> np.ndarray:
        raw = np.empty((rows, len(self._numeric)), dtype=np.float64)
        for index, column in enumerate(self._numeric):
            values = np.asarray(columns[column.name], dtype=np.float64).reshape(-1)
            missing = np.isnan(values)
            if missing.any():
                if self._options.impute != "mean":
                    raise ValueError(f"column {column.name!r} has missing values and nothing imputes them")
                values = np.where(missing, column.mean, values)
            raw[:, index] = values
        x = raw.astype(np.float32)
        if not self._options.standardize:
            return x
        # Normalization's call, in its float32 compute dtype.
        mean, variance = self._statistics()
        std = np.maximum(np.sqrt(variance), np.float32(keras.backend.epsilon()))
        return np.asarray((x - mean) / std, dtype=np.float32)

    def _statistics(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.array([c.mean for c in self._numeric], dtype=np.float32)
        variance = np.array([c.variance for c in self._numeric], dtype=np.float32)
        return mean, variance

    def encode(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The float32 matrix [rows, width] of raw columns. Raises KeyError for an absent column and
        ValueError for missing numeric cells without imputation."""
        names = [c.name for c in self._numeric] + [c.name for c in self._categorical]
        rows = len(np.asarray(columns[names[0]]).reshape(-1))
        parts = [self._numeric_matrix(columns, rows)]
        for column in self._categorical:
            slots = {token: index + 1 for index, token in enumerate(column.vocabulary)}
            values = np.asarray(columns[column.name], dtype=object).reshape(-1)
            indices = [0 if _is_missing(v) else slots.get(str(v), 0) for v in values.tolist()]
            one_hot = np.zeros((rows, len(column.vocabulary) + 1), dtype=np.float32)
            one_hot[np.arange(rows), indices] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts, axis=1)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self._task is Task.MULTICLASS_CLASSIFICATION:
            return np.asarray(y, dtype=np.int32).reshape(-1)
        # One column matches the single output unit (service.core.data_codec's convention); regression
        # targets stay in original units: the model's last layer rescales and the loss standardizes.
        return np.asarray(y, dtype=np.float32).reshape(-1, 1)

    def train_data(self, raw: RawSplit) -> TrainData:
        """Encoded features and targets of both splits, as the trainer takes them."""
        return TrainData(
            self.encode(raw.x_train),
            self._targets(raw.y_train),
            self.encode(raw.x_val),
            self._targets(raw.y_val),
        )

    def target_scale(self) -> tuple[float, float] | None:
        """(mean, std) of the train targets for regression with scale_target, else None."""
        return self._target

    def export(self, core: keras.Model) -> keras.Model:
        """A model on raw values wrapping the trained `core` (which takes encoded rows); not compiled."""
        if not self._categorical:
            if not self._options.standardize:
                return core
            features = keras.Input(shape=(len(self._numeric),), name="features", dtype="float32")
            return keras.Model(features, core(self._normalize(features)), name="ktune_model")
        inputs = self._dict_inputs(core)
        parts: list[Any] = []
        if self._numeric:
            numeric = [inputs[c.name] for c in self._numeric]
            joined = (
                numeric[0] if len(numeric) == 1 else keras.layers.Concatenate(name="ktune_numeric")(numeric)
            )
            parts.append(self._normalize(joined) if self._options.standardize else joined)
        for index, column in enumerate(self._categorical):
            parts.append(_one_hot(column, index)(inputs[column.name]))
        encoded = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="ktune_encoded")(parts)
        with warnings.catch_warnings():
            # A dict key that is not its input's name ("/" in a header) works; Keras warns regardless.
            warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
            return keras.Model(inputs, core(encoded), name="ktune_model")

    def _normalize(self, x: Any) -> Any:
        mean, variance = self._statistics()
        # float32 values exactly, so the layer computes with the same numbers as `encode`.
        return keras.layers.Normalization(
            mean=[float(m) for m in mean], variance=[float(v) for v in variance], name="ktune_normalization"
        )(x)

    def _dict_inputs(self, core: keras.Model) -> dict[str, Any]:
        """One input per column, keyed by its header name and named after it where Keras allows."""
        taken = {core.name, "ktune_model", "ktune_numeric", "ktune_encoded", "ktune_normalization"}
        taken |= {f"ktune_lookup_{index}" for index in range(len(self._categorical))}
        columns: list[tuple[str, str]] = [(c.name, "float32") for c in self._numeric]
        columns += [(c.name, "string") for c in self._categorical]
        headers = {name for name, _ in columns}
        inputs: dict[str, Any] = {}
        for index, (header, dtype) in enumerate(columns):
            name = header
            if not header or "/" in header or header in taken:
                name = header.replace("/", "_") or f"column_{index}"
                while name in taken or name in headers:
                    name = f"{name}_{index}"
            taken.add(name)
            inputs[header] = keras.Input(shape=(1,), name=name, dtype=dtype)
        return inputs

    def summary(self) -> dict[str, Any]:
        """What was fitted, JSON-able: column statistics and fill values, vocabulary sizes, target scale."""
        eps = keras.backend.epsilon()
        return {
            "standardize": self._options.standardize,
            "impute": self._options.impute,
            "numeric": {
                c.name: {"mean": c.mean, "std": max(math.sqrt(c.variance), eps), "fill": c.mean}
                for c in self._numeric
            },
            "categorical": {c.name: {"categories": len(c.vocabulary)} for c in self._categorical},
            "target": None if self._target is None else {"mean": self._target[0], "std": self._target[1]},
            "input": "dict" if self._categorical else "array",
        }


def _one_hot(column: _Categorical, index: int) -> keras.layers.Layer:
    """A layer one-hot encoding a string column exactly like `Preprocessing.encode`."""
    name = f"ktune_lookup_{index}"
    if not column.vocabulary:
        # StringLookup refuses an empty vocabulary; one hashing bin is the lone out-of-vocabulary slot.
        return keras.layers.Hashing(num_bins=1, output_mode="one_hot", name=name)
    # StringLookup drops its OOV token from the start of a vocabulary, so it must be no category's value.
    oov = "[UNK]"
    while oov in column.vocabulary:
        oov = f"[{oov}]"
    return keras.layers.StringLookup(
        vocabulary=list(column.vocabulary), num_oov_indices=1, oov_token=oov, output_mode="one_hot", name=name
    )


def rescale_output(scale: tuple[float, float]) -> keras.layers.Layer:
    """The layer turning standardized outputs into original units: x * std + mean."""
    mean, std = scale
    return keras.layers.Rescaling(scale=std, offset=mean, name="target_rescaling")


# Registered so a model compiled with it reloads inside a worker; users never see it, as the model they
# download is the export, compiled with the plain loss name.
@keras.saving.register_keras_serializable(package="ktune")
class _StandardizedLoss(keras.losses.Loss):  # type: ignore[misc]
    """A named Keras loss on (y - mean) / std of both targets and predictions; for training only."""

    def __init__(self, loss: str, scale: tuple[float, float], **kwargs: Any) -> None:
        kwargs.setdefault("name", f"standardized_{loss}")
        super().__init__(**kwargs)
        self._base = loss
        self._loss = keras.losses.get(loss)
        self._mean, self._std = float(scale[0]), float(scale[1])

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self._loss((y_true - self._mean) / self._std, (y_pred - self._mean) / self._std)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "loss": self._base, "scale": [self._mean, self._std]}


def standardized_loss(name: str, scale: tuple[float, float]) -> keras.losses.Loss:
    """The named loss on standardized targets and predictions. Raises ValueError for `UNSCALED_LOSSES`."""
    if name in UNSCALED_LOSSES:
        raise ValueError(f"{name} is defined on the target's own units and is not standardized")
    return _StandardizedLoss(name, scale)
