"""The Python peers of the upload figure, each run as its own process so that its peak RSS is its own:

    python -m benchmarks.peers requests  BASE_URL TOKEN FILE   # the classic requests example (files=)
    python -m benchmarks.peers canvasapi BASE_URL TOKEN FILE   # canvasapi's Account.create_sis_import

Each prints ``SECONDS <s>``: the time of the upload call alone (the interpreter's start and imports left out, as
curl's own ``time_total`` leaves out its start).
"""

from __future__ import annotations

import sys
import time


def _requests(base_url: str, token: str, path: str) -> None:
    import requests

    with open(path, "rb") as handle:
        response = requests.post(
            f"{base_url}/api/v1/accounts/1/sis_imports",
            headers={"Authorization": f"Bearer {token}"},
            data={"import_type": "instructure_csv"},
            files={"attachment": ("users.csv", handle, "text/csv")},
            timeout=600,
        )
    response.raise_for_status()


def _canvasapi(base_url: str, token: str, path: str) -> None:
    from canvasapi import Canvas

    account = Canvas(base_url, token).get_account(1)
    started = time.monotonic()
    account.create_sis_import(path, import_type="instructure_csv")
    print(f"SECONDS {time.monotonic() - started:.6f}")


def main(argv: list[str]) -> int:
    name, base_url, token, path = argv
    if name == "canvasapi":
        _canvasapi(base_url, token, path)  # times itself: get_account is a call before the upload
        return 0
    import requests  # noqa: F401 (imported before the clock starts, as canvasapi's is)

    started = time.monotonic()
    _requests(base_url, token, path)
    print(f"SECONDS {time.monotonic() - started:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
