"""Fixtures every test tree shares: real servers the project's tests start on loopback; and which tests
run alone: `make test` runs the rest on several pytest workers first (pytest-xdist), then these one at
a time with nothing beside them.

They drive headless Chromium against the game, or time a supervisor's restarts. On a 2-core machine a
neighbouring test starves the browser (its video encoder drops frames, a closed-loop step waits
minutes), which says nothing about the code under test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.ports import free_port

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto_server process on a free loopback port, with dummy credentials in the environment."""
    port = free_port()
    executable = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": REGION}.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {process.returncode}")
                try:
                    httpx.get(f"{url}/moto-api/", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("moto_server did not answer within 30 s") from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def bucket_and_queue(moto_server: str) -> tuple[str, str]:
    """A fresh versioned bucket announcing objects created under raw/ to a fresh SQS queue: (bucket, queue_url).

    Versioning is on, as docs/operations.md requires: sealing an accepted session pins object versions.
    """
    import uuid

    from aiobotocore.session import get_session

    from sd_common.objectstore.s3 import S3ObjectStore

    name = f"sd-raw-{uuid.uuid4().hex[:10]}"
    session = get_session()
    async with session.create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        await s3.create_bucket(Bucket=name)
        await s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    async with session.create_client("sqs", region_name=REGION, endpoint_url=moto_server) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    store = S3ObjectStore(name, endpoint_url=moto_server, region=REGION)
    await store.configure_event_notifications(arn, prefix="raw/")
    await store.close()
    return name, url


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server (Debian's) for the whole run; each test gets its own database."""
    from tests.pg import start_postgres

    cluster = start_postgres()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database: SQLite in a temp dir, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_cluster").new_database()


SERIAL_MODULES = (
    "tests/e2e/",
    "tests/integration/test_stack_supervision.py",
    "services/evaluator/tests/test_city_browser.py",
    "services/evaluator/tests/test_city_closed_loop.py",
    "services/evaluator/tests/test_evaluate_city.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: runs alone, after the parallel part of the suite (conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SERIAL_MODULES):
            item.add_marker(pytest.mark.serial)
