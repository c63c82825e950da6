from __future__ import annotations

import contextlib
import os
import shutil

import pytest

# The shared helpers assert too: have pytest explain their failures as it does in tests.
pytest.register_assert_rewrite("tests.support")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if os.geteuid() == 0 and shutil.which("systemd-nspawn"):
        return
    skip = pytest.mark.skip(reason="lab tests need root and systemd-nspawn (run `make test`)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


class Backend:
    """A fresh, empty state on one backend; open() gives a new connection to it each time."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target  # a file path, or a postgresql:// URL
        self.opened: list[object] = []

    def open(self):  # type: ignore[no-untyped-def]
        from orchestrator.store import open_store  # noqa: PLC0415

        store = open_store(self.target)
        self.opened.append(store)
        return store


def postgres_server_url() -> str | None:
    """The test PostgreSQL server `make test` started, or None when there is none."""
    given = os.environ.get("AVMIGRATE_TEST_PG")
    if given:
        return given
    from tests import pgserver  # noqa: PLC0415

    return pgserver.url() if pgserver.running() else None


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "state.db"))
        return
    server = postgres_server_url()
    if server is None:
        if os.environ.get("AVMIGRATE_REQUIRE_PG"):
            pytest.fail("no PostgreSQL server for the tests: `make test` starts one "
                        "(python -m tests.pgserver up)")
        pytest.skip("no PostgreSQL server (python -m tests.pgserver up starts one)")
    import uuid  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    name = f"avmigrate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    b = Backend("postgresql", server.replace("/postgres?", f"/{name}?", 1))
    yield b
    for store in b.opened:
        with contextlib.suppress(Exception):
            store.close()  # type: ignore[attr-defined]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
