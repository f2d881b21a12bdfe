"""Which model answers each user: the champion, or an online experiment's challenger.

The registry holds the experiment (`recolab.adapters.mlflow.experiments`: the `challenger`
alias and the experiment's tags on the registered model). `VariantRouter` reads it with the
`champion` alias in one registry call per poll, loads or swaps either model, and routes each
user by the domain's sticky assignment (`recolab.domain.experiments`). Starting, changing
or stopping an experiment takes effect at the next poll, without a restart; a challenger
that does not load, or no experiment, means the champion answers everyone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from recolab.application.recommend import Route
from recolab.application.service import ExperimentStatus
from recolab.domain.experiments import CANARY, CHALLENGER, Experiment, in_experiment
from recolab.domain.ports import Scorer

if TYPE_CHECKING:
    from recolab.adapters.runtime.champion import ChampionWatcher

log = logging.getLogger(__name__)


class RegistryState(Protocol):
    """What one registry read says (`recolab.adapters.mlflow.experiments.ExperimentState`)."""

    @property
    def experiment(self) -> Experiment | None: ...
    @property
    def champion_version(self) -> str | None: ...
    @property
    def challenger_version(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


class VariantRouter:
    """Routes users to the champion or the running experiment's challenger.

    `check` reads the registry once and follows both aliases; `route` costs one hash and
    reads one reference (experiment and challenger are swapped together), so a request sees
    either the old experiment or the new one, never half of each.
    """

    def __init__(
        self,
        champion: ChampionWatcher,
        challenger: ChampionWatcher,
        read_state: Callable[[], RegistryState],
        interval_s: float = 30.0,
    ) -> None:
        self.champion = champion
        self.challenger = challenger
        self._read = read_state
        self._interval = interval_s
        # (experiment, its loaded challenger) while one runs here, else None
        self._live: tuple[Experiment, Scorer] | None = None
        self._set: RegistryState | None = None  # the last registry read
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def route(self, user_id: int) -> Route:
        """The user's variant, its scorer, the experiment's name; in shadow mode, the
        challenger to score off the request path for the users in the share."""
        champion, live = self.champion.current(), self._live
        if live is None:
            return Route(champion)
        experiment, challenger = live
        if not in_experiment(user_id, experiment):
            return Route(champion, experiment=experiment.name)
        if experiment.mode == CANARY:
            return Route(challenger, CHALLENGER, experiment.name)
        return Route(champion, experiment=experiment.name, shadow=challenger)

    def check(self) -> None:
        """Read the registry and follow it: the champion, the experiment, its challenger."""
        with self._lock:  # one check at a time (the poll and a caller's)
            try:
                state = self._read()
            except Exception as exc:  # registry unreachable: keep serving what we have
                self.champion.failed(f"registry unavailable: {exc}")
                return
            if state.error and (self._set is None or self._set.error != state.error):
                log.warning("the registry's experiment is off: %s", state.error)
            self._set = state
            self.champion.follow(state.champion_version)
            experiment = state.experiment
            wanted = state.challenger_version if experiment is not None else None
            self.challenger.follow(wanted)
            challenger = self.challenger.current()
            was = self._live
            if experiment is None or challenger is None or challenger.version != wanted:
                self._live = None  # no experiment, or its challenger did not load
            else:
                self._live = (experiment, challenger)
        if was != self._live:
            self._log_change(was, self._live, state)

    def experiment(self) -> ExperimentStatus | None:
        """The experiment set in the registry as this worker runs it (None: none is set)."""
        state, live = self._set, self._live
        if state is None or state.experiment is None:
            return None
        experiment = state.experiment
        running = live is not None and live[0] == experiment
        error = None if running else (self.challenger.status().error or "challenger not loaded")
        return ExperimentStatus(
            name=experiment.name,
            mode=experiment.mode,
            share=experiment.share,
            challenger_version=state.challenger_version,
            running=running,
            error=error,
        )

    def start(self) -> None:
        """Check now, then poll in a daemon thread every `interval_s` seconds."""
        self.check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="variants-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the poll must outlive any one failure
                log.exception("could not follow the registry")

    @staticmethod
    def _log_change(
        was: tuple[Experiment, Scorer] | None,
        now: tuple[Experiment, Scorer] | None,
        state: RegistryState,
    ) -> None:
        if now is not None:
            experiment, challenger = now
            log.info(
                "experiment %s (%s, share %.3f): challenger version %s",
                experiment.name,
                experiment.mode,
                experiment.share,
                challenger.version,
            )
        elif state.experiment is not None:
            log.warning(
                "experiment %s is set but its challenger (version %s) is not loaded: the "
                "champion answers everyone",
                state.experiment.name,
                state.challenger_version,
            )
        elif was is not None:
            log.info("experiment %s stopped: the champion answers everyone", was[0].name)
