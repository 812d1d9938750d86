"""Evaluate a registered version on a dataset version: standard metrics, recorded on the version.

``evaluate("diabetes/3", data="diabetes-test@1", target="progression")`` loads the model
(:func:`keel.models.load`) and the table (:func:`keel.data.load`), predicts in chunks of
:data:`CHUNK_ROWS` rows through the model's signature check, scores the predictions with
scikit-learn's metrics, and records an :class:`~keel.models.evaluation_models.Evaluation`
(``model_evaluations``) with an ``evaluate`` event in the model's audit trail.

Regression: ``rmse``, ``mae``, ``r2``, ``mape`` (left out when the target holds a zero) and
``max_error``. Classification: ``accuracy``, ``precision``/``recall``/``f1`` each ``_macro`` and
``_weighted``, and, when the model has ``predict_proba``, ``log_loss`` and ``roc_auc`` (one
against the rest for more than two classes); the confusion matrix goes in the detail.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from keel.data.versions import get_version as get_dataset_version
from keel.data.versions import load as load_dataset
from keel.errors import InvalidInput, MissingExtra
from keel.models.api import Registry
from keel.models.evaluation_models import Evaluation, Task
from keel.models.loading import Predictor, load_version
from keel.models.models import ModelVersion
from keel.models.signature import check
from keel.models.store_evaluation import EvaluationStore
from keel.models.uris import parse_version_ref
from keel.settings import Settings

__all__ = [
    "CHUNK_ROWS",
    "MAX_CLASSES",
    "TASKS",
    "Evaluator",
    "classification_metrics",
    "evaluate",
    "infer_task",
    "list_evaluations",
    "regression_metrics",
]

CHUNK_ROWS = 100_000
"""Rows given to the model's ``predict`` at a time, bounding the memory ``predict`` needs."""

MAX_CLASSES = 20
"""A numeric target of whole numbers with more distinct values than this is a regression
target when the task is inferred."""

TASKS: tuple[Task, ...] = ("regression", "classification")


class Evaluator:
    """Evaluations of one registry's versions (a :class:`~keel.models.api.Registry`).

    Args:
        registry: the registry the versions are in; its actor records the evaluations.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store = EvaluationStore(registry.store.engine)

    def evaluate(
        self,
        ref: str | ModelVersion,
        *,
        data: str,
        target: str,
        task: Task | None = None,
    ) -> Evaluation:
        """See :func:`evaluate`."""
        if task is not None and task not in TASKS:
            raise InvalidInput(f"task is regression or classification, not {task!r}", task=task)
        version = self.registry.resolve(ref)
        settings = self.registry.settings
        dataset = get_dataset_version(data, settings=settings)
        if dataset.format is None:
            raise InvalidInput(
                f"dataset {dataset.ref} is a {dataset.kind}, not a table: evaluate needs a "
                "CSV or Parquet table (keel.data.log_dataset(dataframe, name=...))",
                dataset=dataset.ref,
            )
        frame = load_dataset(dataset, context="eval", settings=settings)
        X, y, notes = _split(frame, target, dataset.ref)
        if task is None:
            task, why = infer_task(y)
            chosen = f"inferred: {why}"
        else:
            chosen = "given"
        predictor = load_version(version, settings=settings)
        proba_of = getattr(predictor.raw, "predict_proba", None)
        if task == "regression":
            predicted, _ = _predict(predictor, X, None)
            metrics, detail = regression_metrics(y, predicted)
        else:
            predicted, proba = _predict(predictor, X, proba_of)
            classes = getattr(predictor.raw, "classes_", None)
            metrics, detail = classification_metrics(y, predicted, proba=proba, classes=classes)
        detail = {"task": chosen, **detail, "notes": notes + detail.get("notes", [])}
        evaluation = self.store.add_evaluation(
            version.name,
            version.version,
            dataset=dataset.ref,
            dataset_digest=dataset.digest,
            target=target,
            task=task,
            rows=len(y),
            metrics=metrics,
            detail=detail,
            actor=self.registry.actor,
        )
        return evaluation

    def evaluations(self, ref: str) -> list[Evaluation]:
        """See :func:`list_evaluations`."""
        body = ref[len("models:/") :] if ref.startswith("models:/") else ref
        if "/" not in body and "@" not in body:
            name = parse_version_ref(ref, allow_bare=True).name
            self.registry.get_model(name)  # NotFound names similar models
            return self.store.list_evaluations(name)
        version = self.registry.resolve(ref)
        return self.store.list_evaluations(version.name, version.version)


def local_registry(settings: Settings | None) -> Registry:
    """A :class:`~keel.models.api.Registry` over ``settings`` for evaluation and release gates,
    which a tracking server does not serve yet.

    Raises:
        InvalidInput: ``settings`` names a tracking server (the message says how to work on
            the server's database instead).
    """
    settings = settings or Settings()
    if settings.tracking_uri:
        raise InvalidInput(
            "evaluation and release gates are not served by the tracking server "
            f"({settings.tracking_uri}) yet; evaluation routes come with later server work. "
            "Use them with a local or shared database: unset KEEL_TRACKING_URI and set "
            "KEEL_DATABASE_URL to the server's database",
            tracking_uri=settings.tracking_uri,
        )
    return Registry(settings)


def evaluate(
    ref: str | ModelVersion,
    *,
    data: str,
    target: str,
    task: Task | None = None,
    settings: Settings | None = None,
) -> Evaluation:
    """Score a registered version on a dataset version and record the metrics on the version.

    The model and the table are loaded in memory; ``predict`` gets :data:`CHUNK_ROWS` rows at
    a time, each checked against the model's signature. Rows whose target is empty are left
    out (the detail's notes say how many). Inside an active run, the dataset is recorded as
    the run's ``eval`` input.

    Args:
        ref: the version, ``NAME/3``, ``NAME@champion`` or ``models:/...``.
        data: the dataset version, ``NAME@VERSION`` (``NAME`` alone: its latest version), a
            table logged with :func:`keel.data.log_dataset`.
        target: the column holding the true values; the other columns are the model's input.
        task: ``"regression"`` or ``"classification"``; default inferred from the target
            (:func:`infer_task`; the detail says what was inferred and why).
        settings: where the registry and stores are; default ``Settings()``. The model itself
            loads as :func:`keel.models.load` does, from the configured store.

    Returns:
        The recorded :class:`~keel.models.evaluation_models.Evaluation`.

    Raises:
        InvalidInput: no such target column (the message lists the columns), the dataset is
            not a table, or the predictions cannot be scored for the task.
        SchemaMismatch: the table's other columns do not match the model's signature.
        NotFound: no such model, version, alias or dataset version.
        MissingExtra: scikit-learn is not installed.

    Example:
        >>> found = keel.models.evaluate("diabetes/3", data="diabetes-test@1", target="y")
        >>> round(found.metrics["rmse"], 1)  # doctest: +SKIP
        53.8
    """
    with local_registry(settings) as registry:
        return Evaluator(registry).evaluate(ref, data=data, target=target, task=task)


def list_evaluations(ref: str, *, settings: Settings | None = None) -> list[Evaluation]:
    """The evaluations of model ``NAME`` (every version) or one version, newest first.

    Raises:
        NotFound: no such model, version or alias.

    Example:
        >>> [e.dataset for e in list_evaluations("diabetes/3")]  # doctest: +SKIP
        ['diabetes-test@1']
    """
    with local_registry(settings) as registry:
        return Evaluator(registry).evaluations(ref)


# -- the task and the metrics ---------------------------------------------------------------


def infer_task(y: Any) -> tuple[Task, str]:
    """``regression`` for a numeric target with fractions or many distinct values (more than
    :data:`MAX_CLASSES`), else ``classification``; and why, in words.

    Example:
        >>> infer_task(pd.Series([0, 1, 1, 0]))  # doctest: +SKIP
        ('classification', 'target of 2 distinct values')
    """
    from pandas.api import types

    distinct = int(y.nunique())
    if types.is_bool_dtype(y) or not types.is_numeric_dtype(y):
        kind = "boolean" if types.is_bool_dtype(y) else "non-numeric"
        return "classification", f"{kind} target of {distinct} distinct values"
    if types.is_float_dtype(y) and not bool((y % 1 == 0).all()):
        return "regression", "numeric target with fractional values"
    if distinct > MAX_CLASSES:
        return "regression", f"numeric target with {distinct} distinct values"
    return "classification", f"numeric target of only {distinct} distinct values"


def regression_metrics(y_true: Any, y_pred: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """``rmse``, ``mae``, ``r2``, ``mape`` and ``max_error`` of ``y_pred``, and a detail whose
    ``notes`` say which were left out and why (``mape`` with a zero in ``y_true``).

    Raises:
        InvalidInput: the values cannot be scored (not numbers, NaN in the predictions).
        MissingExtra: scikit-learn is not installed.
    """
    metrics_module = _sklearn_metrics()
    import numpy as np

    try:
        y = np.asarray(y_true, dtype=float)
        predicted = np.asarray(y_pred, dtype=float)
        scores: dict[str, float] = {
            "rmse": math.sqrt(metrics_module.mean_squared_error(y, predicted)),
            "mae": metrics_module.mean_absolute_error(y, predicted),
            "max_error": metrics_module.max_error(y, predicted),
        }
        notes = []
        if len(y) >= 2:
            scores["r2"] = metrics_module.r2_score(y, predicted)
        else:
            notes.append("r2 left out: it needs at least two rows")
        zeros = int((y == 0).sum())
        if zeros:
            notes.append(
                f"mape left out: the target is 0 in {zeros:,} rows, where a percentage error "
                "is undefined"
            )
        else:
            scores["mape"] = metrics_module.mean_absolute_percentage_error(y, predicted)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot score the predictions as a regression: {exc}") from None
    return _finite(scores, notes), {"notes": notes}


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    *,
    proba: Any = None,
    classes: Any = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy, precision/recall/f1 (macro and weighted), and with ``proba`` (one column per
    class, in ``classes`` order) ``log_loss`` and ``roc_auc``; the detail holds the labels and
    the confusion matrix (rows: true label, columns: predicted) and notes.

    Raises:
        InvalidInput: the labels cannot be scored (mixed types, continuous predictions).
        MissingExtra: scikit-learn is not installed.
    """
    metrics_module = _sklearn_metrics()
    from sklearn.utils.multiclass import unique_labels

    notes: list[str] = []
    try:
        labels = unique_labels(y_true, y_pred)
        scores: dict[str, float] = {"accuracy": metrics_module.accuracy_score(y_true, y_pred)}
        for average in ("macro", "weighted"):
            for name, score in (
                ("precision", metrics_module.precision_score),
                ("recall", metrics_module.recall_score),
                ("f1", metrics_module.f1_score),
            ):
                scores[f"{name}_{average}"] = score(
                    y_true, y_pred, average=average, zero_division=0
                )
        matrix = metrics_module.confusion_matrix(y_true, y_pred, labels=labels)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot score the predictions as a classification: {exc}") from None
    if proba is None:
        notes.append("log_loss and roc_auc left out: the model has no predict_proba")
    else:
        scores.update(_probability_metrics(metrics_module, y_true, proba, classes, notes))
    detail = {
        "labels": [_plain(label) for label in labels],
        "confusion_matrix": matrix.tolist(),
        "notes": notes,
    }
    return _finite(scores, notes), detail


def _probability_metrics(
    metrics_module: ModuleType, y_true: Any, proba: Any, classes: Any, notes: list[str]
) -> dict[str, float]:
    labels = list(classes) if classes is not None else None
    scores: dict[str, float] = {}
    try:
        scores["log_loss"] = metrics_module.log_loss(y_true, proba, labels=labels)
    except ValueError as exc:
        notes.append(f"log_loss left out: {exc}")
    try:
        if proba.shape[1] == 2:
            scores["roc_auc"] = metrics_module.roc_auc_score(y_true, proba[:, 1])
        else:
            scores["roc_auc"] = metrics_module.roc_auc_score(
                y_true, proba, multi_class="ovr", labels=labels
            )
    except (ValueError, IndexError) as exc:
        notes.append(f"roc_auc left out: {exc}")
    return scores


# -- helpers ----------------------------------------------------------------------------------


def _split(frame: Any, target: str, dataset: str) -> tuple[Any, Any, list[str]]:
    """The model's input, the target and notes (rows left out for an empty target)."""
    if target not in frame.columns:
        columns = ", ".join(str(c) for c in frame.columns)
        raise InvalidInput(
            f"dataset {dataset} has no column {target!r}; its columns are {columns}",
            dataset=dataset,
            target=target,
        )
    notes = []
    empty = frame[target].isna()
    if empty.any():
        notes.append(f"{int(empty.sum()):,} rows with an empty {target!r} left out")
        frame = frame[~empty]
    if len(frame) == 0:
        raise InvalidInput(f"dataset {dataset} has no rows with a {target!r} to score")
    return frame.drop(columns=[target]), frame[target], notes


def _predict(predictor: Predictor, X: Any, proba_of: Any) -> tuple[Any, Any]:
    """Predictions (and class probabilities when ``proba_of`` is given), CHUNK_ROWS at a time."""
    import numpy as np

    predicted, probabilities = [], []
    for start in range(0, len(X), CHUNK_ROWS):
        chunk = X.iloc[start : start + CHUNK_ROWS]
        predicted.append(_one_column(predictor.predict(chunk), len(chunk)))
        if proba_of is not None:
            probabilities.append(np.asarray(proba_of(check(chunk, predictor.signature))))
    proba = np.concatenate(probabilities) if probabilities else None
    return np.concatenate(predicted), proba


def _one_column(predicted: Any, rows: int) -> Any:
    import numpy as np

    values = np.asarray(predicted)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != rows:
        raise InvalidInput(
            f"the model returned predictions of shape {values.shape} for {rows:,} rows; "
            "evaluate scores one prediction per row"
        )
    return values


def _finite(scores: dict[str, Any], notes: list[str]) -> dict[str, float]:
    kept = {}
    for name, value in scores.items():
        number = float(value)
        if math.isfinite(number):
            kept[name] = number
        else:
            notes.append(f"{name} left out: it is {number} on this data")
    return kept


def _plain(value: Any) -> Any:
    """A label as JSON can hold it (numpy scalars become Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def _sklearn_metrics() -> ModuleType:
    try:
        import sklearn.metrics
    except ImportError:
        raise MissingExtra("scikit-learn", extra="sklearn") from None
    return sklearn.metrics
