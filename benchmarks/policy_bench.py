"""The served-policy part of benchmarks/quality.py (kept apart to keep that script short).

Per protocol (B, C) and split seed: the service's Recommender (configs/serving.yaml's knobs)
over the training split and the NeuMF fitted on it, beside the model alone, popularity and
content-based alone (recolab.application.policy_eval, recolab.ml.evaluation.policy).
Optionally, before the fit, the Optuna selection of configs/tune.yaml on the training split
(`--tune-trials`), and after it the choice of policy knobs on an inner split of the training
split (`--select-policy`): neither ever sees the split's test rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from recolab.application.policy_eval import PolicyKnobs, offline_systems
from recolab.config import ServingConfig, load_section
from recolab.domain.model import UserClassification
from recolab.domain.services.strategy import StrategyWeights, hybrid_weights
from recolab.ml.evaluation import policy as PE
from recolab.ml.evaluation import protocols as P
from recolab.ml.fitting import FitResult, NeuMFRecommender, TrainConfig
from recolab.ml.scorer import NeuMFScorer

TEST_FRACTION = 0.25  # protocol B's split, as quality.py runs it
# The candidates the inner split compares per tier: the seed's rule first (kept on ties).
HYBRID_CF = {"casual": (0.6, 0.8, 1.0), "active": (0.8, 0.9, 1.0)}
MMR_LAMBDAS = (0.7, 0.85, 1.0)


def protocol_split(
    ratings: pd.DataFrame, protocol: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) exactly as protocols.run_topk / run_leave_one_out split `ratings`."""
    if protocol == "B":
        return P.stratified_user_split(ratings, TEST_FRACTION, seed)
    return P.leave_latest_out(ratings)


class PolicyBench:
    def __init__(
        self,
        config_dir: Path,
        ratings: pd.DataFrame,
        movies: pd.DataFrame,
        *,
        policy: bool,
        max_users: int | None,
        select: bool,
        tune_trials: int,
        base: TrainConfig,
    ) -> None:
        self.config_dir = config_dir
        self.ratings = ratings[["user_id", "movie_id", "rating", "timestamp"]]
        self.movies = movies
        self.policy, self.max_users, self.select = policy, max_users, select
        self.tune_trials, self.base = tune_trials, base
        serving = load_section(ServingConfig, "serving", config_dir=config_dir)
        self.serving = serving
        self.knobs = PolicyKnobs(
            mmr_lambda=serving.mmr_lambda,
            shortlist=serving.shortlist_size,
            hybrid_weights=hybrid_weights(serving.hybrid_weights),
        )
        self.runs: dict[str, list[tuple[int, PE.PolicyRun]]] = {}
        self.selections: dict[str, list[dict[str, Any]]] = {}
        self.seconds: dict[str, float] = {}
        self._tuned: dict[tuple[str, int | None], list[str]] = {}

    def knobs_record(self) -> dict[str, Any]:
        s = self.serving
        return {
            "mmr_lambda": s.mmr_lambda,
            "shortlist_size": s.shortlist_size,
            "hybrid_weights": s.hybrid_weights,
        }

    # -- selection of NeuMF settings (Optuna) inside the training split ---------------------

    def tuned(self, protocol: str, seed: int) -> list[str] | None:
        if not self.tune_trials:
            return None
        # C's split (each user's latest rating) does not depend on the seed and the search is
        # seeded (tune.sampler.seed): one search serves every C seed.
        key = (protocol, seed if protocol == "B" else None)
        if key not in self._tuned:
            from recolab.ml.tuning import load_tune_config, run_search, selection_data

            tune = load_tune_config(self.config_dir, n_trials=self.tune_trials)
            splits = {"test_fraction": TEST_FRACTION, "split_seed": seed}
            data = selection_data(self.ratings, protocol, splits)
            self._tuned[key] = list(run_search(data, self.base, tune).overrides)
        return self._tuned[key]

    # -- the policy table -----------------------------------------------------------------

    def evaluate(
        self,
        protocol: str,
        seed: int,
        fitted: FitResult,
        new_model: Callable[[], NeuMFRecommender],
    ) -> None:
        if not self.policy or protocol not in ("B", "C"):
            return
        start = time.perf_counter()
        train, test = protocol_split(self.ratings, protocol, seed)
        scorer = NeuMFScorer.from_fit_result(fitted)
        profiles = PE.split_profiles(train, self.movies)
        systems = offline_systems(profiles, scorer, self.knobs)
        run = PE.evaluate_split(
            train, test, profiles, systems, k=10, max_users=self.max_users, seed=seed
        )
        self.runs.setdefault(protocol, []).append((seed, run))
        if self.select:
            choice = self._select(protocol, seed, train, new_model)
            self.selections.setdefault(protocol, []).append(choice)
        self.seconds[protocol] = self.seconds.get(protocol, 0.0) + time.perf_counter() - start

    def _select(
        self,
        protocol: str,
        seed: int,
        train: pd.DataFrame,
        new_model: Callable[[], NeuMFRecommender],
    ) -> dict[str, Any]:
        """Per tier, the knob value with the best inner-split nDCG@10 (the seed's on ties):
        the protocol's own split applied to the training split, a NeuMF fitted on its
        training part. The outer test rows are not in `train`, so never seen."""
        inner_train, inner_test = protocol_split(train, protocol, seed + 1000)
        model = new_model().fit(inner_train)
        assert model.result is not None
        scorer = NeuMFScorer.from_fit_result(model.result)
        profiles = PE.split_profiles(inner_train, self.movies)
        variants: dict[str, list[tuple[Any, PolicyKnobs]]] = {}
        table = dict(self.knobs.hybrid_weights or {})
        for tier, values in HYBRID_CF.items():
            t = UserClassification(tier)
            variants[tier] = [
                (cf, replace(self.knobs, hybrid_weights={**table, t: StrategyWeights(cf, 1 - cf)}))
                for cf in values
            ]
        variants["power_user"] = [(lam, replace(self.knobs, mmr_lambda=lam)) for lam in MMR_LAMBDAS]
        out: dict[str, Any] = {"seed": seed, "inner_users": int(inner_test["user_id"].nunique())}
        for tier, options in variants.items():
            scores: dict[str, float] = {}
            for value, knobs in options:
                maker = offline_systems(profiles, scorer, knobs)["policy"]
                run = PE.evaluate_split(
                    inner_train, inner_test, profiles, {"policy": maker}, tiers_only=(tier,)
                )
                figures = run.per_user
                scores[str(value)] = float(figures["ndcg"].mean()) if len(figures) else float("nan")
            best = max(scores, key=lambda v: (scores[v], v == str(options[0][0])))
            out[tier] = {"ndcg@10": scores, "chosen": best}
        return out

    def report(self, protocol: str) -> dict[str, Any]:
        runs = self.runs.get(protocol)
        if not runs:
            return {}
        summary = PE.summarize([r for _, r in runs], [s for s, _ in runs])
        summary["knobs"] = self.knobs_record()
        summary["users"] = (
            "all test users" if self.max_users is None else f"a sample of {self.max_users}"
        )
        summary["relevant"] = (
            "every test item of the user" if protocol == "B" else "the held-out latest rating"
        ) + ", ranked against the whole served catalogue"
        summary["wall_seconds"] = self.seconds.get(protocol, 0.0)
        summary["markdown"] = PE.markdown_table(summary)
        out: dict[str, Any] = {"policy": summary}
        if protocol in self.selections:
            out["policy_selection"] = self.selections[protocol]
        return out
