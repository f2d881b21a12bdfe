"""Follows a registry alias (`champion`, or an experiment's `challenger`) and swaps the
served model without a restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from recolab.domain.ports import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionStatus:
    model_name: str
    version: str | None
    loaded: bool
    error: str | None


class ChampionWatcher:
    """Holds the current champion's scorer; `check()` loads a new one when the alias moves.

    The swap is one reference assignment, so requests in flight finish on the model they
    started with and no request sees a half-loaded one. `follow(version)` does the same for
    a version read elsewhere (`VariantRouter` reads both aliases in one registry call);
    with `release_when_unset`, an alias that is gone unloads the model (a challenger whose
    experiment stopped) instead of keeping it (a champion is kept).
    """

    def __init__(
        self,
        model_name: str,
        resolve: Callable[[str], str | None],
        load: Callable[[str, str], Scorer],
        interval_s: float = 30.0,
        alias: str = "champion",
        *,
        release_when_unset: bool = False,
    ) -> None:
        self.model_name = model_name
        self.alias = alias
        self._release = release_when_unset
        self._resolve = resolve  # model name -> champion version (None: no champion)
        self._load = load  # (model name, version) -> scorer
        self._interval = interval_s
        self._scorer: Scorer | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_swap: list[Callable[[Scorer], None]] = []

    def current(self) -> Scorer | None:
        return self._scorer

    def status(self) -> ChampionStatus:
        scorer = self._scorer
        return ChampionStatus(
            self.model_name, scorer.version if scorer else None, scorer is not None, self._error
        )

    def check(self) -> bool:
        """Load the alias's model if it changed; True when a new model was swapped in."""
        try:
            version = self._resolve(self.model_name)
        except Exception as exc:  # registry unreachable: keep serving what we have
            self.failed(f"registry unavailable: {exc}")
            return False
        return self.follow(version)

    def failed(self, reason: str) -> None:
        """The registry could not be read: keep serving what is loaded, say why."""
        with self._lock:
            self._error = reason
        log.warning("%s", reason)

    def follow(self, version: str | None) -> bool:
        """Load `version` if it is not the one served (None: the alias is not set); True
        when a new model was swapped in."""
        with self._lock:
            if version is None:
                if self._release:
                    self._scorer, self._error = None, None
                else:
                    self._error = f"no '{self.alias}' alias on model {self.model_name!r} yet"
                return False
            current = self._scorer
            if current is not None and current.version == version:
                self._error = None
                return False
            try:
                scorer = self._load(self.model_name, version)
            except Exception as exc:
                self._error = f"could not load {self.model_name} v{version}: {exc}"
                log.exception("%s load failed", self.alias)
                if self._release:  # never serve a challenger other than the alias's
                    self._scorer = None
                return False
            self._scorer, self._error = scorer, None
        log.info("serving %s version %s as %s", self.model_name, version, self.alias)
        for callback in self.on_swap:
            callback(scorer)
        return True

    def start(self) -> None:
        """Check now, then poll in a daemon thread every `interval_s` seconds."""
        self.check()
        if self._thread is None:
            name = f"{self.alias}-poll"
            self._thread = threading.Thread(target=self._poll, name=name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()
