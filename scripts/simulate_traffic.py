"""Simulated users for the demo: they ask for recommendations and rate what they like.

Each demo user has planted preferences (`recolab.adapters.ingest.demo.planted_preferences`:
the biases, latent factors and genre taste the demo's ratings were drawn from). A simulated
user shown a list rates the best-liked movie on it with a probability that grows with how
much they like it (a logistic curve around `threshold`), with stars from the same taste. A
model that puts better-liked movies in front of users therefore gets more ratings back: what
an online experiment measures (`recolab online-report`).

Against a running service (the demo stack):

    .venv/bin/python scripts/simulate_traffic.py --url http://127.0.0.1:3000 --rounds 3

The tokens are signed with RECOLAB_JWT_SECRET (the service's secret). The e2e tests drive
the same users in-process through `simulate`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from recolab.adapters.ingest.demo import PlantedPreferences, planted_preferences

# recommend(user_id, n) -> (movie ids shown, variant that answered)
Recommend = Callable[[int, int], tuple[list[int], str | None]]
Rate = Callable[[int, int, float], None]  # (user_id, movie_id, stars)


@dataclass(frozen=True)
class Behaviour:
    """How a simulated user reacts to a list: rates its best-liked movie with probability
    sigmoid(sharpness * (liking - threshold))."""

    threshold: float = 1.0
    sharpness: float = 2.0

    def rates(self, liking: float, draw: float) -> bool:
        return draw < 1.0 / (1.0 + math.exp(-self.sharpness * (liking - self.threshold)))

    @staticmethod
    def stars(liking: float) -> float:
        return float(np.clip(np.round((3.5 + liking) * 2) / 2, 0.5, 5.0))


@dataclass
class Summary:
    answers: Counter[str] = field(default_factory=Counter)  # per variant
    ratings: Counter[str] = field(default_factory=Counter)  # per variant

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            variant: {
                "answers": self.answers[variant],
                "ratings": self.ratings[variant],
                "rate": self.ratings[variant] / self.answers[variant],
            }
            for variant in sorted(self.answers)
        }


def simulate(
    recommend: Recommend,
    rate: Rate,
    preferences: PlantedPreferences,
    users: Iterable[int],
    *,
    rounds: int = 3,
    n: int = 10,
    seed: int = 0,
    behaviour: Behaviour = Behaviour(),
) -> Summary:
    """`rounds` passes over `users`: each is answered, then maybe rates one shown movie."""
    rng = np.random.default_rng(seed)
    summary = Summary()
    users = list(users)
    for _ in range(rounds):
        for user_id in users:
            shown, variant = recommend(user_id, n)
            key = variant or "champion"
            summary.answers[key] += 1
            liking = preferences.of(user_id, np.asarray(shown, dtype=np.int64))
            draw = rng.random()  # drawn whatever is shown: variants see the same draws
            if not len(shown) or np.isnan(liking).all():
                continue
            best = int(np.nanargmax(liking))
            if behaviour.rates(float(liking[best]), draw):
                rate(user_id, int(shown[best]), behaviour.stars(float(liking[best])))
                summary.ratings[key] += 1
    return summary


def http_backend(url: str, secret: str) -> tuple[Recommend, Rate]:
    """`recommend` and `rate` over the service's HTTP API, as each user (their own token)."""
    import httpx
    from pydantic import SecretStr

    from recolab.bootstrap import local_token
    from recolab.config import Settings

    settings = Settings(jwt_secret=SecretStr(secret))
    client = httpx.Client(base_url=url, timeout=30.0)
    tokens: dict[int, str] = {}

    def auth(user_id: int) -> dict[str, str]:
        if user_id not in tokens:
            tokens[user_id] = local_token(str(user_id), "user", 3600, settings)
        return {"Authorization": f"Bearer {tokens[user_id]}"}

    def recommend(user_id: int, n: int) -> tuple[list[int], str | None]:
        reply = client.post("/recommend", json={"user_id": user_id, "n": n}, headers=auth(user_id))
        reply.raise_for_status()
        body = reply.json()
        return [item["movie_id"] for item in body["items"]], body.get("variant")

    def rate(user_id: int, movie_id: int, stars: float) -> None:
        body = {"user_id": user_id, "movie_id": movie_id, "score": stars}
        client.post("/ratings", json=body, headers=auth(user_id)).raise_for_status()

    return recommend, rate


def wait_for_experiment(url: str, timeout_s: float) -> str | None:
    """Wait (at most `timeout_s`) until the service runs the experiment set in the registry
    (it checks every `serving.champion_poll_interval_s`); what it runs then, in words."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        experiment = httpx.get(f"{url}/status", timeout=30).json().get("experiment")
        if experiment is None or experiment.get("running"):
            return None if experiment is None else f"{experiment['name']} ({experiment['mode']})"
        if time.monotonic() > deadline:
            return f"{experiment['name']}: not running yet ({experiment.get('error')})"
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=None, help="the first N demo users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-users", type=int, default=1000)
    parser.add_argument("--demo-movies", type=int, default=2000)
    parser.add_argument("--demo-seed", type=int, default=42)
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for the service to pick up an experiment just started",
    )
    args = parser.parse_args(argv)
    running = wait_for_experiment(args.url, args.wait)
    print(f"experiment: {running or 'none'}", file=sys.stderr)
    preferences = planted_preferences(
        n_users=args.demo_users, n_movies=args.demo_movies, seed=args.demo_seed
    )
    secret = os.environ.get("RECOLAB_JWT_SECRET", "dev-insecure-change-me-not-for-production")
    recommend, rate = http_backend(args.url, secret)
    users = preferences.user_ids[: args.users] if args.users else preferences.user_ids
    summary = simulate(
        recommend, rate, preferences, users.tolist(), rounds=args.rounds, seed=args.seed
    )
    json.dump(summary.to_dict(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
