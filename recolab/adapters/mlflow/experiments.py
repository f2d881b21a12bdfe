"""The running experiment, kept on the registered model in MLflow: the `challenger` alias
names the version tried, and registered-model tags name the experiment, its mode and share.

Every service worker reads it on each poll of the registry (with the champion alias), so
starting, changing or stopping an experiment needs no restart and no config file on the
serving machines; `recolab experiment start|stop|status` writes and reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException

from recolab.domain.errors import InvalidValue
from recolab.domain.experiments import Experiment

CHALLENGER_ALIAS = "challenger"
TAG_NAME = "experiment.name"
TAG_MODE = "experiment.mode"
TAG_SHARE = "experiment.share"
TAG_STARTED = "experiment.started_at"
TAGS = (TAG_NAME, TAG_MODE, TAG_SHARE, TAG_STARTED)
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """What the registry says: the experiment (None: none runs), the versions holding the
    `champion` and `challenger` aliases, and when the experiment started (epoch seconds)."""

    experiment: Experiment | None
    champion_version: str | None
    challenger_version: str | None
    started_at: float | None = None
    error: str | None = None  # tags that do not make an experiment (it is then off)


def read_state(client: Any, model_name: str) -> ExperimentState:
    """The experiment on `model_name` (an experiment without a challenger version is off)."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return ExperimentState(None, None, None)
        raise
    aliases = dict(getattr(model, "aliases", None) or {})
    champion = aliases.get("champion")
    challenger = aliases.get(CHALLENGER_ALIAS)
    tags = dict(model.tags or {})
    if TAG_NAME not in tags:
        return ExperimentState(None, _str(champion), _str(challenger))
    started = _float(tags.get(TAG_STARTED))
    try:
        experiment = Experiment(
            tags[TAG_NAME], tags.get(TAG_MODE, ""), float(tags.get(TAG_SHARE, "nan"))
        )
    except (InvalidValue, ValueError) as exc:
        return ExperimentState(None, _str(champion), _str(challenger), started, str(exc))
    if challenger is None:
        error = f"experiment {experiment.name!r} has no {CHALLENGER_ALIAS!r} alias: it is off"
        return ExperimentState(None, _str(champion), None, started, error)
    return ExperimentState(experiment, _str(champion), _str(challenger), started)


def start_experiment(
    client: Any, model_name: str, experiment: Experiment, version: str | None = None
) -> ExperimentState:
    """Start (or change) the experiment; `version` moves the `challenger` alias first.

    Refuses a challenger that is the champion itself, or no challenger at all."""
    if version is not None:
        client.get_model_version(model_name, str(version))  # an unknown version fails here
        client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, str(version))
    state = read_state(client, model_name)
    if state.challenger_version is None:
        raise InvalidValue(
            f"model {model_name!r} has no {CHALLENGER_ALIAS!r} alias: give the version to try"
        )
    if state.challenger_version == state.champion_version:
        raise InvalidValue(
            f"version {state.challenger_version} is the champion: a challenger must be another"
        )
    client.set_registered_model_tag(model_name, TAG_NAME, experiment.name)
    client.set_registered_model_tag(model_name, TAG_MODE, experiment.mode)
    client.set_registered_model_tag(model_name, TAG_SHARE, repr(float(experiment.share)))
    client.set_registered_model_tag(model_name, TAG_STARTED, repr(time.time()))
    return read_state(client, model_name)


def stop_experiment(client: Any, model_name: str, *, drop_challenger: bool = False) -> None:
    """Stop the experiment (everyone gets the champion again); `drop_challenger` also
    removes the `challenger` alias."""
    model = client.get_registered_model(model_name)
    for tag in TAGS:
        if tag in (model.tags or {}):
            client.delete_registered_model_tag(model_name, tag)
    if drop_challenger and CHALLENGER_ALIAS in (getattr(model, "aliases", None) or {}):
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
