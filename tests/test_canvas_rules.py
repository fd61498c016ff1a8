"""Canvas answer classification and the option echo check, on their own (pure functions; docs/canvas-api.md §1, §4)."""

from __future__ import annotations

import pytest

from sisdaemon.canvas import (
    CanvasClient,
    FaultKind,
    canvas_message,
    classify,
    parse_link_next,
    post_outcome_known,
    unapplied_options,
)

JSON = "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("status", "content_type", "body", "kind"),
    [
        (401, JSON, '{"errors":[{"message":"Invalid access token."}]}', FaultKind.CREDENTIAL),
        (
            403,
            JSON,
            '{"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}',
            FaultKind.CREDENTIAL,
        ),
        (403, JSON, '{"errors":["SIS imports are not enabled for this account"]}', FaultKind.CREDENTIAL),
        (403, "text/plain; charset=utf-8", "403 Forbidden (Rate Limit Exceeded)\n", FaultKind.THROTTLED),
        (429, "text/plain", "429 Too Many Requests (Rate Limit Exceeded)\n", FaultKind.THROTTLED),
        (500, JSON, '{"errors":[{"message":"An error occurred."}]}', FaultKind.TRANSIENT),
        (502, "text/html", "<html>Bad Gateway</html>", FaultKind.TRANSIENT),
        (302, "text/html", "", FaultKind.CONFIGURATION),
        (200, "text/html", "<html>login</html>", FaultKind.CONFIGURATION),
        (400, JSON, '{"message":"Invalid diffing_drop_status"}', FaultKind.CONFIGURATION),
        (404, JSON, '{"errors":[{"message":"The specified resource does not exist."}]}', FaultKind.NOT_FOUND),
        (404, "text/html", "<html>Not Found</html>", FaultKind.CONFIGURATION),  # a proxy's page, not Canvas's answer
    ],
)
def test_each_answer_is_classified_as_canvas_means_it(
    status: int, content_type: str, body: str, kind: FaultKind
) -> None:
    assert classify(status, content_type, body)[0] is kind


@pytest.mark.parametrize(
    ("status", "content_type", "body", "known"),
    [
        (400, JSON, '{"message":"Batch mode specified, but the given batch_mode_term_id cannot be found."}', True),
        (401, JSON, '{"errors":[{"message":"Invalid access token."}]}', True),
        (404, JSON, '{"errors":[{"message":"The specified resource does not exist."}]}', True),
        (404, "text/html", "<html>Not Found</html>", False),
        (413, "text/html", "too large", True),
        (429, "text/plain", "429 Too Many Requests (Rate Limit Exceeded)", True),
        (403, "text/plain", "403 Forbidden (Rate Limit Exceeded)\n", True),
        (301, "text/html", "", True),
        (500, JSON, '{"errors":[{"message":"An error occurred."}]}', False),
        (502, "text/html", "<html>Bad Gateway</html>", False),
        (504, "text/html", "", False),
        (200, "text/html", "<html>?</html>", False),
    ],
)
def test_only_refusals_that_create_nothing_make_a_post_outcome_known(
    status: int, content_type: str, body: str, known: bool
) -> None:
    assert post_outcome_known(status, content_type, body) is known


def test_canvas_messages_are_read_from_each_body_shape() -> None:
    assert canvas_message('{"errors":[{"message":"Invalid access token."}]}') == "Invalid access token."
    assert canvas_message('{"errors":["SIS imports are not enabled for this account"]}').startswith("SIS imports")
    assert canvas_message('{"error":true,"error_message":"Missing attachment"}') == "Missing attachment"
    assert canvas_message('{"message":"Invalid diffing_drop_status"}') == "Invalid diffing_drop_status"
    assert canvas_message("<html>\n<b>oops</b></html>") == "<html> <b>oops</b></html>"


def test_options_echoed_canvas_style_count_as_applied() -> None:
    sent = {
        "batch_mode": True,
        "batch_mode_term_id": "sis_term_id:2026FA",
        "change_threshold": 10,
        "override_sis_stickiness": False,
        "diffing_remaster_data_set": True,
        "batch_mode_enrollment_drop_status": "inactive",
        "skip_deletes": True,
    }
    echoed = {
        "batch_mode": True,
        "batch_mode_term_id": 4,
        "change_threshold": 10,
        "override_sis_stickiness": None,
        "diffing_remaster": True,
        "skip_deletes": True,
    }
    assert unapplied_options(sent, echoed) == []


def test_an_option_canvas_did_not_apply_is_named() -> None:
    sent = {"batch_mode": True, "batch_mode_term_id": "12", "change_threshold": 10}
    echoed = {"batch_mode": None, "batch_mode_term_id": 13, "change_threshold": 10}
    assert unapplied_options(sent, echoed) == ["batch_mode", "batch_mode_term_id"]


def test_an_option_missing_from_an_older_canvas_answer_is_not_judged() -> None:
    assert unapplied_options({"diff_row_count_threshold": 1_000_000_005}, {"batch_mode": None}) == []


def test_the_next_page_link_is_found_in_canvas_comma_joined_links() -> None:
    header = (
        '<https://x.example/api/v1/accounts/1/sis_imports?page=1&per_page=100>; rel="current",'
        '<https://x.example/api/v1/accounts/1/sis_imports?page=2&per_page=100>; rel="next",'
        '<https://x.example/api/v1/accounts/1/sis_imports?page=1&per_page=100>; rel="first"'
    )
    assert parse_link_next(header) == "https://x.example/api/v1/accounts/1/sis_imports?page=2&per_page=100"
    assert parse_link_next('<https://x.example/a?page=1>; rel="current"') is None
    assert parse_link_next(None) is None


def test_calls_slow_down_as_the_rate_limit_headroom_runs_low() -> None:
    client = CanvasClient("https://canvas.example.edu", "1", lambda: "token")
    try:
        assert client.throttle_pause() == 0.0  # nothing known yet
        client.rate_limit_remaining = 600.0
        assert client.throttle_pause() == 0.0
        client.rate_limit_remaining = 50.0  # Canvas drains 10 units a second: wait for 100 units
        assert client.throttle_pause() == pytest.approx(10.0)
        client.rate_limit_remaining = -400.0
        assert client.throttle_pause() == 15.0  # capped
    finally:
        client.close()
