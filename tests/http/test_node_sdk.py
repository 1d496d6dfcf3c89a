"""The whole voucher lifecycle driven by Voucherify's own npm SDK (``@voucherify/sdk`` 2.9.0),
unchanged, against a real uvicorn server on 127.0.0.1 — on the in-memory store and on a SQLite
file.

The flow is ``tests/http/node/flow.js`` (plain Node.js; it asserts every step and exits non-zero
at the first mismatch). The SDK is pinned in ``tests/http/node/package.json`` and its
``package-lock.json``; ``.ci/run`` installs it with ``npm ci``. Without ``node`` or that install
the test is skipped — except under CI (``CI`` set), where it fails: CI must run it.

The server takes a voucher body that repeats its code, as the npm SDK's ``vouchers.create``
and ``vouchers.update`` send it (checked here too, with Starlette's TestClient).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.http.conftest import APP_ID, APP_TOKEN
from tests.liveness import LIVENESS
from vouchercore import Engine

FOLDER = Path(__file__).parent / "node"
SDK_VERSION = "2.9.0"
INSTALL = "npm ci --prefix tests/http/node"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def node() -> str:
    """The ``node`` executable, with the pinned SDK installed next to the flow; else a skip
    (a failure under CI) saying what is missing."""
    node = shutil.which("node")
    installed = FOLDER / "node_modules" / "@voucherify" / "sdk" / "package.json"
    if node is None:
        missing = "Node.js ('node' is not on PATH)"
    elif not installed.is_file():
        missing = f"the npm SDK (tests/http/node/node_modules is not installed: run `{INSTALL}`)"
    else:
        version = json.loads(installed.read_text(encoding="utf-8"))["version"]
        if version != SDK_VERSION:  # a stale install is never skipped
            pytest.fail(
                f"@voucherify/sdk {version} is installed, not {SDK_VERSION}: run `{INSTALL}`"
            )
        return node
    if _in_ci():
        pytest.fail(f"CI is set but {missing}: CI must run the npm SDK flow")
    pytest.skip(f"needs {missing}")


def test_the_npm_sdk_drives_the_whole_voucher_lifecycle_unchanged(
    node: str, base_url: str, served_engine: Engine
) -> None:
    environment = {
        **os.environ,
        "VOUCHERCORE_URL": base_url,
        "VOUCHERCORE_APP_ID": APP_ID,
        "VOUCHERCORE_APP_TOKEN": APP_TOKEN,
        "VOUCHERCORE_TEST_LIVENESS": f"{LIVENESS:g}",
    }
    try:
        run = subprocess.run(
            [node, "flow.js"],
            cwd=FOLDER,
            env=environment,
            capture_output=True,
            text=True,
            timeout=3 * LIVENESS,  # a liveness bound: the flow fails rather than hangs
            check=False,
        )
    except subprocess.TimeoutExpired as stuck:
        parts = (stuck.output, stuck.stderr)
        output = [part.decode() if isinstance(part, bytes) else part or "" for part in parts]
        pytest.fail(f"the Node flow did not finish in {3 * LIVENESS:g} s:\n{''.join(output)}")
    if run.returncode != 0:
        pytest.fail(
            f"the Node flow failed (exit {run.returncode}):\n{run.stdout}{run.stderr}",
            pytrace=False,
        )
    assert re.search(r"^all \d+ steps passed", run.stdout, re.MULTILINE), run.stdout
    assert served_engine.audit().ok


def test_a_voucher_body_may_repeat_its_code_as_the_npm_sdk_sends_it_but_not_another_code(
    client: TestClient,
) -> None:
    made = client.post(
        "/v1/vouchers/SAME-1",
        json={"code": "SAME-1", "type": "GIFT_VOUCHER", "gift": {"amount": 100}},
    )
    assert (made.status_code, made.json()["code"]) == (200, "SAME-1")
    other = client.post(
        "/v1/vouchers/SAME-2",
        json={"code": "OTHER", "type": "GIFT_VOUCHER", "gift": {"amount": 100}},
    )
    assert (other.status_code, other.json()["key"]) == (400, "invalid_payload")
    assert client.get("/v1/vouchers/SAME-2").status_code == 404
    updated = client.put("/v1/vouchers/SAME-1", json={"code": "SAME-1", "active": False})
    assert (updated.status_code, updated.json()["active"]) == (200, False)
    renamed = client.put("/v1/vouchers/SAME-1", json={"code": "OTHER", "active": True})
    assert (renamed.status_code, renamed.json()["key"]) == (400, "invalid_payload")
    assert client.get("/v1/vouchers/SAME-1").json()["active"] is False
