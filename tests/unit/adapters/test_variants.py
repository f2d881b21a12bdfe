"""VariantRouter: the champion and an experiment's challenger followed together, users routed
by the sticky assignment, changes taken at the next check (our own watcher; the registry
read is a hand-set state of the shape `read_state` returns)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from recolab.adapters.mlflow.experiments import ExperimentState
from recolab.adapters.runtime.champion import ChampionWatcher
from recolab.adapters.runtime.variants import VariantRouter
from recolab.domain.experiments import CHALLENGER, CHAMPION, Experiment, assign_variant

USERS = range(1, 5001)


class Model:
    def __init__(self, version: str) -> None:
        self.version = version


class Registry:
    """What the registry says, set by the test; loads counted, some versions broken."""

    def __init__(self) -> None:
        self.state = ExperimentState(None, "1", None)
        self.loads: list[str] = []
        self.broken: set[str] = set()
        self.down = False

    def read(self) -> ExperimentState:
        if self.down:
            raise ConnectionError("registry unreachable")
        return self.state

    def load(self, _name: str, version: str) -> Any:
        self.loads.append(version)
        if version in self.broken:
            raise OSError(f"cannot load {version}")
        return Model(version)

    def router(self) -> VariantRouter:
        def watcher(alias: str) -> ChampionWatcher:
            return ChampionWatcher(
                "m",
                resolve=lambda _n: None,
                load=self.load,
                alias=alias,
                release_when_unset=alias != "champion",
            )

        router = VariantRouter(watcher("champion"), watcher("challenger"), self.read)
        router.check()
        return router


def versions(router: VariantRouter) -> Counter[tuple[str | None, str, str | None]]:
    served = Counter()
    for user in USERS:
        route = router.route(user)
        served[
            (route.scorer.version if route.scorer else None, route.variant, route.experiment)
        ] += 1
    return served


def test_canary_routes_the_share_to_the_challenger_sticky_across_workers() -> None:
    registry = Registry()
    canary = Experiment("v2", "canary", 0.2)
    registry.state = ExperimentState(canary, "1", "2")
    first, second = registry.router(), registry.router()  # two workers
    for user in USERS:
        a, b = first.route(user), second.route(user)
        assert (a.variant, a.scorer.version) == (b.variant, b.scorer.version)  # type: ignore[union-attr]
        expected = assign_variant(user, canary)
        assert a.variant == expected and a.experiment == "v2" and a.shadow is None
        assert a.scorer.version == ("2" if expected == CHALLENGER else "1")  # type: ignore[union-attr]
    share = versions(first)[("2", CHALLENGER, "v2")] / len(USERS)
    assert abs(share - 0.2) < 0.03
    status = first.experiment()
    assert status is not None and (status.name, status.mode, status.share) == ("v2", "canary", 0.2)
    assert (status.challenger_version, status.running, status.error) == ("2", True, None)


def test_starting_changing_and_stopping_take_effect_at_the_next_check() -> None:
    registry = Registry()
    router = registry.router()
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}
    assert router.experiment() is None
    registry.state = ExperimentState(Experiment("v2", "canary", 0.1), "1", "2")
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}  # not before the check
    router.check()
    small = versions(router)[("2", CHALLENGER, "v2")]
    registry.state = ExperimentState(Experiment("v2", "canary", 0.5), "1", "2")
    router.check()
    large = versions(router)[("2", CHALLENGER, "v2")]
    assert 0 < small < large < len(USERS)
    assert registry.loads == ["1", "2"]  # changing the share loads nothing
    registry.state = ExperimentState(None, "1", "2")  # stopped (the alias may stay)
    router.check()
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}
    assert router.challenger.current() is None  # unloaded
    assert router.experiment() is None


def test_both_aliases_hot_swap() -> None:
    registry = Registry()
    registry.state = ExperimentState(Experiment("e", "canary", 1.0), "1", "2")
    router = registry.router()
    assert router.route(7).scorer.version == "2"  # type: ignore[union-attr]
    registry.state = ExperimentState(Experiment("e", "canary", 1.0), "1", "3")
    router.check()
    assert router.route(7).scorer.version == "3"  # type: ignore[union-attr]
    registry.state = ExperimentState(Experiment("e", "canary", 0.0), "4", "3")
    router.check()
    assert router.route(7).scorer.version == "4"  # type: ignore[union-attr]
    assert registry.loads == ["1", "2", "3", "4"]


def test_a_challenger_that_does_not_load_leaves_everyone_with_the_champion() -> None:
    registry = Registry()
    registry.broken = {"2"}
    registry.state = ExperimentState(Experiment("e", "canary", 0.5), "1", "2")
    router = registry.router()
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}
    status = router.experiment()
    assert status is not None and status.running is False
    assert status.error is not None and "could not load" in status.error
    registry.broken = set()  # fixed: retried at the next check
    router.check()
    assert versions(router)[("2", CHALLENGER, "e")] > 0


def test_a_challenger_whose_new_version_fails_is_not_kept_serving() -> None:
    registry = Registry()
    registry.state = ExperimentState(Experiment("e", "canary", 1.0), "1", "2")
    router = registry.router()
    registry.broken = {"3"}
    registry.state = ExperimentState(Experiment("e", "canary", 1.0), "1", "3")
    router.check()  # the alias moved to a version that does not load: not the old one
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}


def test_shadow_mode_answers_with_the_champion_and_names_the_challenger_to_score() -> None:
    registry = Registry()
    shadow = Experiment("s", "shadow", 0.3)
    registry.state = ExperimentState(shadow, "1", "2")
    router = registry.router()
    scored = 0
    for user in USERS:
        route = router.route(user)
        assert (route.scorer.version, route.variant, route.experiment) == ("1", CHAMPION, "s")  # type: ignore[union-attr]
        if route.shadow is not None:
            scored += 1
            assert route.shadow.version == "2"
            assert assign_variant(user, Experiment("s", "canary", 0.3)) == CHALLENGER
    assert abs(scored / len(USERS) - 0.3) < 0.03


def test_a_registry_that_does_not_answer_keeps_what_is_served() -> None:
    registry = Registry()
    registry.state = ExperimentState(Experiment("e", "canary", 1.0), "1", "2")
    router = registry.router()
    registry.down = True
    router.check()
    assert router.route(5).scorer.version == "2"  # type: ignore[union-attr]
    assert "registry unavailable" in (router.champion.status().error or "")


def test_tags_that_make_no_experiment_are_off() -> None:
    registry = Registry()
    registry.state = ExperimentState(None, "1", "2", error="experiment share must be in [0, 1]")
    router = registry.router()
    assert versions(router) == {("1", CHAMPION, None): len(USERS)}
    assert router.experiment() is None
