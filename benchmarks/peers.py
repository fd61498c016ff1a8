"""The Python peers of the upload figure, each run as its own process so that its peak RSS is its own:

    python -m benchmarks.peers requests  BASE_URL TOKEN FILE   # the classic requests example (files=)
    python -m benchmarks.peers canvasapi BASE_URL TOKEN FILE   # canvasapi's Account.create_sis_import
    python -m benchmarks.peers client    BASE_URL TOKEN FILE   # sisdaemon's CanvasClient alone (multipart, hashed)
    python -m benchmarks.peers raw       BASE_URL TOKEN FILE   # the same reads and hash as a raw body, extension=csv
    python -m benchmarks.peers sha256    BASE_URL TOKEN FILE   # the sha256 of the file alone, no upload

Each prints ``SECONDS <s>``: the time of the upload call alone (the interpreter's start and imports left out, as
curl's own ``time_total`` leaves out its start).

``client`` and ``raw`` differ only in the body's framing: they show what multipart costs against the raw body that
Canvas also takes (``extension=``, stored as ``sis_import.csv``), which the daemon does not send (docs/design.md
"Talking to Canvas"). ``sha256`` is the part of sisdaemon's time that curl does not spend.
"""

from __future__ import annotations

import os
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


def _client(base_url: str, token: str, path: str) -> None:
    from sisdaemon.canvas import BodyDigest, CanvasClient

    client = CanvasClient(base_url, "1", lambda: token, upload_timeout=600)
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.monotonic()
        client.create_sis_import(fd, "0123456789ab_users.csv", [], digest=BodyDigest())
        print(f"SECONDS {time.monotonic() - started:.6f}")
    finally:
        os.close(fd)
        client.close()


def _raw(base_url: str, token: str, path: str) -> None:
    import requests

    from sisdaemon.upload_body import BodyDigest, UploadBody

    fd = os.open(path, os.O_RDONLY)
    try:
        with requests.Session() as session:
            started = time.monotonic()
            response = session.post(
                f"{base_url}/api/v1/accounts/1/sis_imports",
                params={"import_type": "instructure_csv", "extension": "csv"},
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
                data=UploadBody(fd, os.fstat(fd).st_size, digest=BodyDigest()),
                timeout=600,
            )
            response.raise_for_status()
            print(f"SECONDS {time.monotonic() - started:.6f}")
    finally:
        os.close(fd)


def _sha256(path: str) -> None:
    from sisdaemon.upload_body import UPLOAD_BLOCK, BodyDigest

    digest = BodyDigest()
    started = time.monotonic()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(UPLOAD_BLOCK):
            digest.update(block)
    digest.hexdigest()
    print(f"SECONDS {time.monotonic() - started:.6f}")


def main(argv: list[str]) -> int:
    name, base_url, token, path = argv
    # Each times itself: canvasapi's get_account and the client's set-up come before the upload.
    if name == "canvasapi":
        _canvasapi(base_url, token, path)
    elif name == "client":
        _client(base_url, token, path)
    elif name == "raw":
        _raw(base_url, token, path)
    elif name == "sha256":
        _sha256(path)
    else:
        import requests  # noqa: F401 (imported before the clock starts, as canvasapi's is)

        started = time.monotonic()
        _requests(base_url, token, path)
        print(f"SECONDS {time.monotonic() - started:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
