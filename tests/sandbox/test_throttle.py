"""Canvas's leaky-bucket throttle: cost headers on every token answer; 403 or 429 when the bucket is full."""

from __future__ import annotations

import warnings

import pytest
import requests
from canvasapi import Canvas
from canvasapi.exceptions import Forbidden, RateLimitExceeded

from sisdaemon.sandbox import Sandbox

SELF = "/api/v1/users/self"


def test_every_token_answer_carries_cost_headers_even_when_throttling_is_off(
    sandbox: Sandbox, api: requests.Session
) -> None:
    response = api.get(sandbox.url + SELF, timeout=5)
    assert float(response.headers["X-Request-Cost"]) >= 0
    assert 0 < float(response.headers["X-Rate-Limit-Remaining"]) <= 600
    sandbox.throttle.fill("sandbox-test-token", 700)
    assert api.get(sandbox.url + SELF, timeout=5).status_code == 200  # off: never refused


@pytest.mark.parametrize("path", ["/api/v1/nowhere", "/api/v1/accounts/77/sis_imports", "/not/even/api"])
def test_an_unknown_route_or_account_requested_with_a_token_carries_cost_headers(
    sandbox: Sandbox, api: requests.Session, path: str
) -> None:
    response = api.get(sandbox.url + path, timeout=5)
    assert response.status_code == 404
    assert float(response.headers["X-Request-Cost"]) >= 0
    assert 0 < float(response.headers["X-Rate-Limit-Remaining"]) <= 600
    assert "X-Request-Cost" not in requests.get(sandbox.url + path, timeout=5).headers  # no token, no bucket


def test_a_full_bucket_refuses_an_unknown_route_too() -> None:
    with Sandbox(token="T", throttle="429") as sb, requests.Session() as session:
        session.headers["Authorization"] = "Bearer T"
        sb.throttle.fill("T", 560)
        assert session.get(sb.url + "/api/v1/nowhere", timeout=5).status_code == 429


@pytest.mark.parametrize(
    ("mode", "body"),
    [("429", "429 Too Many Requests (Rate Limit Exceeded)\n"), ("403", "403 Forbidden (Rate Limit Exceeded)\n")],
)
def test_a_full_bucket_refuses_until_it_has_leaked(mode: str, body: str) -> None:
    with Sandbox(token="T", throttle=mode) as sb, requests.Session() as session:
        session.headers["Authorization"] = "Bearer T"
        sb.throttle.fill("T", 560)
        refused = session.get(sb.url + SELF, timeout=5)
        assert refused.status_code == int(mode)
        assert refused.text == body
        assert refused.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "X-Request-Cost" not in refused.headers
        assert 0 < float(refused.headers["X-Rate-Limit-Remaining"]) < 50
        assert refused.headers["Date"]
        sb.throttle.fill("T", 0)
        assert session.get(sb.url + SELF, timeout=5).status_code == 200
        assert [r.status for r in sb.requests] == [int(mode), 200]


def test_canvasapi_sees_429_as_rate_limit_exceeded_and_the_legacy_403_by_its_body() -> None:
    with Sandbox(token="T", throttle="429") as sb:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            canvas = Canvas(sb.url, "T")
        sb.throttle.fill("T", 590)
        with pytest.raises(RateLimitExceeded):
            canvas.get_account(1)
        sb.throttle.mode = "403"
        with pytest.raises(Forbidden, match="Rate Limit Exceeded"):
            canvas.get_account(1)
