"""Input a hostile client sends, on SQLite and on PostgreSQL: control characters in query
strings and bodies, unknown query parameters, ids at the published bound.

`GET /movies?title=%00` used to answer the whole catalogue on SQLite (LIKE reads its pattern
only up to the NUL); every control character is now a 422 that says so, before any query.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine

from recolab.adapters.sql.engine import make_engine
from recolab.adapters.sql.loading import load_dataset
from recolab.adapters.sql.migrate import upgrade
from recolab.adapters.sql.queries import SqlQueries
from recolab.domain.errors import InvalidValue
from tests.conftest import fresh_postgres_database, require_service
from tests.integration.test_service_inprocess import _dataset, _serve, make_workspace, token

with warnings.catch_warnings():  # starlette asks for httpx2, which this stack does not have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ADMIN = token("hostile-input", "admin")
# C0 controls, DEL and C1 controls (Unicode category Cc), and where they hide
CONTROL = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]
TEXT = ["{c}", "film{c}", "{c}film 1", "fi{c}lm"]
N_MOVIES = len(_dataset()[1])


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(database URL, backend) of a database loaded with the in-process service's data,
    and the service's environment pointing at it."""
    env = make_workspace(
        tmp_path_factory.mktemp("hostile"),
        rate_limit_per_minute=1_000_000,
        champion_poll_interval_s=3600,
    )
    with ExitStack() as stack:
        url = env["RECOLAB_DATABASE_URL"]
        if request.param == "postgresql":
            server = require_service("RECOLAB_TEST_POSTGRES_URL")
            url = stack.enter_context(fresh_postgres_database(server, "recolab_hostile"))
            upgrade(url)
            engine = make_engine(url)
            load_dataset(engine, *_dataset(), dataset="tiny", source="test")
            engine.dispose()
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        for key in ("RECOLAB_REDIS_URL", "RECOLAB_MODEL_NAME"):
            mp.delenv(key, raising=False)
        for key, value in {**env, "RECOLAB_DATABASE_URL": url}.items():
            mp.setenv(key, value)
        yield url, request.param


@pytest.fixture(scope="module")
def client(database: tuple[str, str]) -> Iterator[TestClient]:
    yield from _serve()


@pytest.fixture(scope="module")
def engine(database: tuple[str, str]) -> Iterator[Engine]:
    engine = make_engine(database[0])
    yield engine
    engine.dispose()


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"].startswith("invalid request") and field in body["error"]
    assert "control characters are not allowed" in body["error"], body["error"]


def test_the_backend_is_the_one_asked_for(client: TestClient, database: tuple[str, str]) -> None:
    assert client.get("/status").json()["database"]["backend"] == database[1]


@pytest.mark.parametrize("char", CONTROL, ids=repr)
def test_control_characters_in_query_strings_are_422(client: TestClient, char: str) -> None:
    for template in TEXT:
        value = template.format(c=char)
        _refused(client.get("/movies", params={"title": value}, headers=ADMIN), "query.title")
        _refused(client.get("/movies", params={"genre": value}, headers=ADMIN), "query.genre")


def test_nul_in_the_title_does_not_match_the_whole_catalogue(client: TestClient) -> None:
    raw = client.get("/movies?title=%00&limit=100", headers=ADMIN)  # as the issue sent it
    _refused(raw, "query.title")
    assert "U+0000 at position 0" in raw.json()["error"]
    # the same search without the NUL still finds what it should, and no more
    found = client.get("/movies", params={"title": "film 14", "limit": 100}, headers=ADMIN)
    assert found.status_code == 200, found.text
    titles = [m["title"] for m in found.json()["items"]]
    assert titles and len(titles) < N_MOVIES and all("film 14" in t.lower() for t in titles)


@pytest.mark.parametrize("char", ["\x00", "\n", "\x7f", "\x85"], ids=repr)
def test_control_characters_in_body_strings_are_422(client: TestClient, char: str) -> None:
    response = client.post(
        "/recommend", json={"user_id": 1, "strategy": f"auto{char}"}, headers=ADMIN
    )
    _refused(response, "body.strategy")


def test_printable_text_is_still_searched(client: TestClient) -> None:
    for title in ("100% love", "FILM 1", "ﬁlm", "Amélie", "a b"):  # spaces and non-ASCII
        response = client.get("/movies", params={"title": title}, headers=ADMIN)
        assert response.status_code == 200, (title, response.text)


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x9f"], ids=repr)
def test_search_refuses_control_characters_before_the_database(engine: Engine, char: str) -> None:
    queries = SqlQueries(engine)
    with pytest.raises(InvalidValue, match="title must not contain control characters"):
        queries.search(f"film{char}", None, 200)
    with pytest.raises(InvalidValue, match="genre must not contain control characters"):
        queries.search(None, f"{char}drama", 200)
    assert len(queries.search("film 1", None, 200)) < N_MOVIES


# ---- the spec's id bounds are the server's


def _id_bounds(spec: dict[str, Any]) -> dict[str, Any]:
    """Every published id maximum: path parameters and body fields named *_id."""
    found: dict[str, Any] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"].endswith("_id"):
                    found[f"{method} {path} {parameter['name']}"] = parameter["schema"]["maximum"]
    for name, schema in spec["components"]["schemas"].items():
        if name.endswith("Body") and name != "ErrorBody":  # the request bodies
            for field, prop in schema["properties"].items():
                if field.endswith("_id"):
                    found[f"{name}.{field}"] = prop["maximum"]
    return found


def test_published_id_maxima_are_exact_and_enforced(client: TestClient) -> None:
    bounds = _id_bounds(client.get("/docs.json").json())
    assert len(bounds) == 7, bounds  # 4 path ids (users, movies) and 3 body ids
    assert {float(b) for b in bounds.values()} == {float(2**53 - 1)}
    top = int(next(iter(bounds.values())))
    assert all(int(b) == b == top for b in bounds.values())  # a float that is exactly it
    for path in ("/movies/{}", "/movies/{}/similar", "/users/{}", "/users/{}/history"):
        assert client.get(path.format(top), headers=ADMIN).status_code == 404, path
        over = client.get(path.format(top + 1), headers=ADMIN)
        assert over.status_code == 422 and "less than or equal" in over.json()["error"], path
    bodies = [
        ("/recommend", {"user_id": top}),
        ("/ratings", {"user_id": 1, "movie_id": top, "score": 4.0}),
        ("/ratings", {"user_id": top, "movie_id": 1, "score": 4.0}),
    ]
    for path, body in bodies:
        assert client.post(path, json=body, headers=ADMIN).status_code == 404, (path, body)
        over = {k: v + 1 if v == top else v for k, v in body.items()}
        assert client.post(path, json=over, headers=ADMIN).status_code == 422, (path, over)


# ---- unknown query parameters are refused, as unknown body fields are


@pytest.mark.parametrize(
    ("path", "params", "unknown"),
    [
        ("/movies", {"titel": "film", "limit": 5}, ["titel"]),
        ("/movies", {"title": "film", "x": "1", "y": ""}, ["x", "y"]),
        ("/movies/1", {"verbose": "true"}, ["verbose"]),
        ("/movies/1/similar", {"k": 3, "n": 3}, ["n"]),
        ("/users/1/history", {"limti": 5}, ["limti"]),
        ("/status", {"debug": "1"}, ["debug"]),
    ],
)
def test_unknown_query_parameters_are_422_naming_them(
    client: TestClient, path: str, params: dict[str, Any], unknown: list[str]
) -> None:
    response = client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 422, response.text
    body = response.json()
    assert [d["loc"] for d in body["detail"]] == [f"query.{name}" for name in unknown]
    assert all("unknown query parameter" in d["msg"] for d in body["detail"])
    assert all(f"query.{name}" in body["error"] for name in unknown)


def test_unknown_query_parameters_on_posts_are_422(client: TestClient) -> None:
    response = client.post("/recommend?debug=1", json={"user_id": 1}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert "query.debug: unknown query parameter (this route takes: none)" in response.text
    known = client.get("/movies", params={"title": "film", "genre": "drama", "limit": 3})
    assert known.status_code == 401  # declared parameters pass on (to authentication here)


@pytest.mark.parametrize(
    "query", ["title=film&title=%02", "limit=5&limit=6", "title=a&genre=drama&genre=drama"]
)
def test_a_query_parameter_given_twice_is_422(client: TestClient, query: str) -> None:
    """Only the last value used to be read (and checked): `title=film&title=%02` passed."""
    response = client.get(f"/movies?{query}", headers=ADMIN)
    assert response.status_code == 422, response.text
    assert "given 2 times: this parameter takes one value" in response.json()["error"]
