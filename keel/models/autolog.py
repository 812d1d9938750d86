"""``keel.autolog()``: every scikit-learn ``fit`` records a run with no other code.

The patch wraps ``fit`` on every class built on ``sklearn.base.BaseEstimator`` that defines
one: the classes already imported (walking ``BaseEstimator.__subclasses__()``, milliseconds,
where ``sklearn.utils.all_estimators()`` would import all of scikit-learn, ~10 s) and, through
a wrapped ``BaseEstimator.__init_subclass__``, every class defined later. Only the outermost
``fit`` of a thread or task records (a ``ContextVar``): a Pipeline's steps, a search's many
candidate fits and a subclass's ``super().fit()`` run unrecorded inside it.

An outermost fit logs, into the active run or into a run it starts and ends itself:

- params: ``get_params(deep=True)`` as strings (values over :data:`MAX_PARAM_CHARS`
  characters are cut, with a note saying so), logged before ``fit`` so a failed fit keeps them;
- training metrics on the training data (``training_rmse``/``mae``/``r2`` for regressors,
  ``training_accuracy``/``f1``/``log_loss``/``roc_auc`` for classifiers); a search's
  ``best_params_`` as ``best.<param>`` params and ``best_score_`` as ``best_cv_score``;
- the fitted model with :func:`keel.models.log_model` (input example: X's first 5 rows);
- the training data's profile (:func:`keel.data.profile.profile_table` on X as a DataFrame) as
  the run artifact ``training_profile.json``.

The run tag ``keel.autolog`` lists what each recorded fit logged (estimator class, model path,
profile path), so a monitor can find the profile a model was trained on. Logging never breaks
the user's fit: a failing step is skipped with one :class:`AutologWarning` naming the reason.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from keel.errors import MissingExtra
from keel.tracking import fluent
from keel.tracking.models import MAX_KEY_LENGTH, RunStatus
from keel.tracking.remote import TrackingClient

__all__ = [
    "AUTOLOG_TAG",
    "MAX_PARAM_CHARS",
    "PROFILE_FILE",
    "AutologWarning",
    "autolog",
]

AUTOLOG_TAG = "keel.autolog"
"""The run tag listing each recorded fit: ``[{"estimator", "model", "profile"}, ...]``."""

PROFILE_FILE = "training_profile.json"
"""The run artifact holding the training data's profile (``training_profile-2.json`` for a
run's second recorded fit, beside ``model-2``)."""

MAX_PARAM_CHARS = 1000
"""A param value longer than this is cut and ends with a note giving its full length."""

EXAMPLE_ROWS = 5


class AutologWarning(UserWarning):
    """A logging step of an autologged fit failed; the fit itself went on."""


@dataclass(frozen=True)
class _Options:
    log_models: bool
    log_datasets_profile: bool


_lock = threading.RLock()
_originals: dict[type, Callable[..., Any]] = {}  # class -> its own fit before patching
_init_subclass: list[Any] = []  # BaseEstimator's own __init_subclass__ entry (or a marker)
_options: list[_Options] = []  # the current options while patched
_warned: set[str] = set()
_fitting: ContextVar[bool] = ContextVar("keel_autolog_fitting", default=False)
_MISSING = object()


def autolog(
    *, log_models: bool = True, log_datasets_profile: bool = True, disable: bool = False
) -> None:
    """Make every scikit-learn ``fit`` record a run: params, training metrics, model, profile.

    Calling it again changes the options; the patch is applied once. ``disable=True``
    restores every original ``fit``.

    Args:
        log_models: log the fitted model with :func:`keel.models.log_model`.
        log_datasets_profile: profile X and store it as ``training_profile.json``.
        disable: undo the patch.

    Raises:
        MissingExtra: scikit-learn is not installed.

    Example:
        >>> keel.autolog()
        >>> LinearRegression().fit(X, y)  # one run: params, training_rmse..., model, profile
        >>> keel.autolog(disable=True)
    """
    with _lock:
        if disable:
            _unpatch()
            return
        base: Any = _base_estimator()
        _options[:] = [_Options(log_models=log_models, log_datasets_profile=log_datasets_profile)]
        _warned.clear()
        if _init_subclass:
            return
        own = base.__dict__.get("__init_subclass__", _MISSING)
        _init_subclass.append(own)

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            if own is _MISSING:  # sklearn's mixins set up metadata routing here
                super(base, cls).__init_subclass__(**kwargs)
            else:
                own.__func__(cls, **kwargs)
            _patch_class(cls)

        base.__init_subclass__ = classmethod(__init_subclass__)
        for cls in _subclasses(base):
            _patch_class(cls)


def _base_estimator() -> type:
    try:
        from sklearn.base import BaseEstimator
    except ImportError as exc:
        raise MissingExtra(
            "keel.autolog records scikit-learn fits: pip install 'keel[sklearn]'",
            extra="sklearn",
        ) from exc
    return BaseEstimator


def _subclasses(base: type) -> Iterator[type]:
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(cls.__subclasses__())


def _patch_class(cls: type) -> None:
    with _lock:
        own = cls.__dict__.get("fit")
        if cls in _originals or not inspect.isfunction(own):
            return
        _originals[cls] = own
        cls.fit = _wrap(own)  # type: ignore[attr-defined]


def _unpatch() -> None:
    if not _init_subclass:
        return
    base = _base_estimator()
    for cls, original in _originals.items():
        cls.fit = original  # type: ignore[attr-defined]
    _originals.clear()
    saved = _init_subclass.pop()
    if saved is _MISSING:
        del base.__init_subclass__
    else:
        base.__init_subclass__ = saved  # type: ignore[method-assign]
    _options.clear()


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        options = _options[0] if _options else None
        if options is None or _fitting.get():
            return original(self, *args, **kwargs)
        token = _fitting.set(True)
        try:
            return _recorded_fit(original, self, args, kwargs, options)
        finally:
            _fitting.reset(token)

    fit.__keel_autolog__ = True  # type: ignore[attr-defined]
    return fit


def _recorded_fit(
    original: Callable[..., Any],
    estimator: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: _Options,
) -> Any:
    started = None
    if fluent.active_run() is None:
        try:
            started = fluent.start_run()
        except Exception as exc:  # no store reachable: fit without recording
            _warn("start a run", exc)
            return original(estimator, *args, **kwargs)
    active = fluent.active_run()
    assert active is not None
    _step("log params", lambda: _log_params(active.client, active.run_id, estimator))
    try:
        result = original(estimator, *args, **kwargs)
    except BaseException as exc:
        if started is not None:
            status = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
            _step("end the run", lambda: fluent._end(started, status))
        raise
    try:
        _log_fitted(active.client, active.run_id, estimator, args, kwargs, options)
    finally:
        if started is not None:
            _step("end the run", lambda: fluent._end(started, RunStatus.FINISHED))
    return result


def _log_fitted(
    client: TrackingClient,
    run_id: str,
    estimator: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: _Options,
) -> None:
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    weight = kwargs.get("sample_weight")
    _step("log search results", lambda: _log_search(client, run_id, estimator))
    if y is not None and X is not None:
        _step(
            "compute training metrics",
            lambda: _log_metrics(client, run_id, estimator, X, y, weight),
        )
    suffix = _step("count the run's fits", lambda: _free_suffix(client, run_id)) or ""
    record: dict[str, str | None] = {
        "estimator": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "model": None,
        "profile": None,
    }
    if options.log_models:
        record["model"] = _step("log the model", lambda: _log_model(estimator, X, suffix))
    if options.log_datasets_profile and X is not None:
        record["profile"] = _step(
            "profile the training data", lambda: _log_profile(client, run_id, X, suffix)
        )
    _step("tag the run", lambda: _tag(client, run_id, record))


def _step(what: str, action: Callable[[], Any]) -> Any:
    """Run one logging step; a failure is one AutologWarning (per step and error type)."""
    try:
        return action()
    except Exception as exc:
        _warn(what, exc)
        return None


def _warn(what: str, exc: BaseException) -> None:
    key = f"{what}:{type(exc).__name__}"
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"keel.autolog could not {what} ({type(exc).__name__}: {exc}); the fit went on without it",
        AutologWarning,
        stacklevel=4,
    )


# -- what a fit logs ------------------------------------------------------------------------


def _log_params(client: TrackingClient, run_id: str, estimator: Any) -> None:
    params = {
        key: _param_text(value)
        for key, value in estimator.get_params(deep=True).items()
        if len(key) <= MAX_KEY_LENGTH
    }
    _log_new_params(client, run_id, params)


def _log_new_params(client: TrackingClient, run_id: str, params: dict[str, str]) -> None:
    """Log ``params``, leaving out keys the run already has with another value (an earlier
    fit in the same run): params cannot change, and the first fit's stay."""
    existing = client.get_run(run_id).params
    clashing = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
    client.log_params(run_id, {k: v for k, v in params.items() if k not in clashing})
    if clashing:
        raise ValueError(
            f"the run already has other values for {', '.join(clashing[:5])}"
            + (f" and {len(clashing) - 5} more" if len(clashing) > 5 else "")
            + "; start a run per fit to keep each one's params"
        )


def _param_text(value: Any) -> str:
    text = str(value)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    note = f"... (truncated from {len(text):,} characters)"
    return text[: MAX_PARAM_CHARS - len(note)] + note


def _log_search(client: TrackingClient, run_id: str, estimator: Any) -> None:
    best_params = getattr(estimator, "best_params_", None)
    if isinstance(best_params, dict):
        _log_new_params(
            client, run_id, {f"best.{k}": _param_text(v) for k, v in best_params.items()}
        )
    best_score = getattr(estimator, "best_score_", None)
    if isinstance(best_score, int | float) and math.isfinite(best_score):
        client.log_metrics(run_id, {"best_cv_score": float(best_score)})


def training_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
    """The fitted ``estimator``'s metrics on its training data (empty when neither a
    regressor nor a classifier)."""
    from sklearn import metrics
    from sklearn.base import is_classifier, is_regressor

    if is_regressor(estimator):
        predicted = estimator.predict(X)
        mse = metrics.mean_squared_error(y, predicted, sample_weight=sample_weight)
        return {
            "training_rmse": math.sqrt(mse),
            "training_mae": metrics.mean_absolute_error(y, predicted, sample_weight=sample_weight),
            "training_r2": metrics.r2_score(y, predicted, sample_weight=sample_weight),
        }
    if not is_classifier(estimator):
        return {}
    predicted = estimator.predict(X)
    found = {
        "training_accuracy": metrics.accuracy_score(y, predicted, sample_weight=sample_weight),
        "training_f1": metrics.f1_score(
            y, predicted, average="weighted", sample_weight=sample_weight
        ),
    }
    if hasattr(estimator, "predict_proba"):  # False when a probability=False SVC, say
        proba = estimator.predict_proba(X)
        labels = estimator.classes_
        found["training_log_loss"] = metrics.log_loss(
            y, proba, sample_weight=sample_weight, labels=labels
        )
        if len(labels) == 2:
            found["training_roc_auc"] = metrics.roc_auc_score(
                y, proba[:, 1], sample_weight=sample_weight
            )
        elif len(labels) > 2:
            found["training_roc_auc"] = metrics.roc_auc_score(
                y, proba, multi_class="ovr", sample_weight=sample_weight, labels=labels
            )
    return {k: float(v) for k, v in found.items()}


def _log_metrics(
    client: TrackingClient, run_id: str, estimator: Any, X: Any, y: Any, weight: Any
) -> None:
    found = training_metrics(estimator, X, y, weight)
    if found:
        client.log_metrics(run_id, found)


def _free_suffix(client: TrackingClient, run_id: str) -> str:
    """ "" for a run's first recorded fit, "-2", "-3"... for the next ones."""
    tag = client.get_run(run_id).tags.get(AUTOLOG_TAG)
    count = len(json.loads(tag)) if tag else 0
    return "" if count == 0 else f"-{count + 1}"


def _log_model(estimator: Any, X: Any, suffix: str) -> str:
    from keel.models.packaging import log_model

    example = _head(X) if hasattr(estimator, "predict") else None
    return log_model(estimator, name=f"model{suffix}", input_example=example).artifact_path


def _head(X: Any) -> Any:
    """X's first rows for the input example (None for a sparse matrix)."""
    if X is None or hasattr(X, "tocsr"):
        return None
    if hasattr(X, "iloc"):
        return X.iloc[:EXAMPLE_ROWS]
    import numpy as np

    return np.asarray(X[:EXAMPLE_ROWS])


def _as_frame(X: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, pd.Series):
        return X.to_frame()
    if hasattr(X, "tocsr"):
        raise ValueError("X is a sparse matrix; profiles are for dense tables")
    array = np.asarray(X)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"X has {array.ndim} dimensions; a profile is of a 2-D table")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


def _log_profile(client: TrackingClient, run_id: str, X: Any, suffix: str) -> str:
    from keel.data.profile import profile_table

    profile = profile_table(_as_frame(X))
    stem, _, extension = PROFILE_FILE.rpartition(".")
    path = f"{stem}{suffix}.{extension}"
    client.log_text(run_id, profile.model_dump_json(indent=2), path)
    return path


def _tag(client: TrackingClient, run_id: str, record: dict[str, str | None]) -> None:
    tag = client.get_run(run_id).tags.get(AUTOLOG_TAG)
    records = json.loads(tag) if tag else []
    client.set_tag(run_id, AUTOLOG_TAG, json.dumps([*records, record]))
