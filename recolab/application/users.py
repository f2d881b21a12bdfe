"""Use cases on users and ratings: register, rate, read a profile."""

from __future__ import annotations

from dataclasses import dataclass

from recolab.domain.errors import UserNotFound
from recolab.domain.events import MovieRated, UserRegistered
from recolab.domain.model import Rating, User, UserClassification
from recolab.domain.ports import EventPublisher, UnitOfWork
from recolab.domain.values import (
    MAX_RATING,
    MIN_RATING,
    RATING_STEP,
    MovieId,
    RatingScore,
    Timestamp,
    UserId,
)

SCORE_RANGE = (MIN_RATING, MAX_RATING, RATING_STEP)  # what RatingScore accepts: min, max, step


@dataclass(frozen=True, slots=True)
class RateMovie:
    user_id: int
    movie_id: int
    score: float


@dataclass(frozen=True, slots=True)
class RatingOutcome:
    rating: Rating
    previous_score: RatingScore | None
    user: User

    @property
    def classification(self) -> UserClassification:
        return self.user.classify()


def register_user(uow: UnitOfWork, bus: EventPublisher) -> User:
    """Create a new user with no ratings (a cold start)."""
    with uow:
        user = User(id=uow.users.next_id())
        uow.users.add(user)
        uow.commit()
    bus.publish(UserRegistered(user_id=user.id))
    return user


def rate_movie(command: RateMovie, uow: UnitOfWork, bus: EventPublisher) -> RatingOutcome:
    """Store a rating (or replace the user's earlier one) and update both sides' statistics.

    One transaction; statistics are updated by the repositories atomically, so concurrent
    ratings lose no update. Publishes MovieRated after the commit.
    """
    user_id, movie_id = UserId(command.user_id), MovieId(command.movie_id)
    rating = Rating(user_id, movie_id, RatingScore(command.score), Timestamp.now())
    with uow:
        previous = uow.ratings.upsert(rating)  # UserNotFound / MovieNotFound: nothing written
        user = uow.users.record_rating(user_id, rating.score, previous)
        uow.movies.record_rating(movie_id, rating.score, previous)
        uow.commit()
    bus.publish(
        MovieRated(user_id=user_id, movie_id=movie_id, score=rating.score, previous_score=previous)
    )
    return RatingOutcome(rating, previous, user)


@dataclass(frozen=True, slots=True)
class UserProfile:
    user: User
    classification: UserClassification
    cf_weight: float
    cb_weight: float
    recent_ratings: list[Rating]


def get_profile(user_id: int, uow: UnitOfWork, recent: int = 20) -> UserProfile:
    uid = UserId(user_id)
    with uow:
        user = uow.users.get(uid)
        if user is None:
            raise UserNotFound(uid.value)
        ratings = uow.ratings.for_user(uid, limit=recent)
    return UserProfile(user, user.classify(), user.cf_weight(), user.cb_weight(), ratings)
