"""A large multipart upload is streamed to disk: the server's memory does not grow with the file.

Size from $SISDAEMON_BIG_UPLOAD_MB (default 256; 1024 by hand). Skipped, saying why, when the disk is short.
The sandbox serves in this process, so the process's peak resident memory (VmHWM, reset first through
/proc/self/clear_refs) bounds what the server held.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder

from sisdaemon.sandbox import Sandbox

MEGABYTE = 1024 * 1024
ROW = b"user_%09d,login_%09d,First,Last,someone@example.edu,active\n"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _write_big_csv(path: Path, size: int) -> None:
    block = b"".join(ROW % (i, i) for i in range(16_000))
    with path.open("wb") as sink:
        sink.write(b"user_id,login_id,first_name,last_name,email,status\n")
        written = 0
        while written < size:
            sink.write(block)
            written += len(block)


@pytest.mark.slow
def test_a_big_multipart_upload_is_spooled_to_disk_without_growing_memory(tmp_path: Path) -> None:
    size_mb = int(os.environ.get("SISDAEMON_BIG_UPLOAD_MB", "256"))
    size = size_mb * MEGABYTE
    free = shutil.disk_usage(tmp_path).free
    if free < 3 * size + 512 * MEGABYTE:
        pytest.skip(f"big upload: {size_mb} MiB needs about {3 * size_mb + 512} MiB free, {free // MEGABYTE} MiB free")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("big upload: needs Linux /proc to measure peak memory")
    source = tmp_path / "big_users.csv"
    _write_big_csv(source, size)
    actual = source.stat().st_size
    data_dir = tmp_path / "sandbox"
    with Sandbox(token="T", fast=True, data_dir=data_dir) as sandbox:
        sandbox.stick_next("created")  # only the upload is measured here, not a long import
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
        before_kb = _status_kb("VmRSS")
        started = time.monotonic()
        with source.open("rb") as stream:
            encoder = MultipartEncoder(
                fields={"attachment": ("big_users.csv", stream, "text/csv"), "import_type": "instructure_csv"}
            )
            response = requests.post(
                sandbox.url + "/api/v1/accounts/1/sis_imports",
                data=encoder,
                headers={"Authorization": "Bearer T", "Content-Type": encoder.content_type},
                timeout=600,
            )
        seconds = time.monotonic() - started
        peak_growth_mb = (_status_kb("VmHWM") - before_kb) / 1024
        assert response.status_code == 200, response.text
        record = sandbox.requests[-1]
        assert (record.attachment_filename, record.attachment_size) == ("big_users.csv", actual)
        uploads = list((data_dir / "uploads").iterdir())
        assert [path.stat().st_size for path in uploads] == [actual]  # spooled to a file, whole
        assert peak_growth_mb < 64, f"peak memory grew {peak_growth_mb:.0f} MiB for a {size_mb} MiB upload"
        print(f"uploaded {size_mb} MiB in {seconds:.1f} s; peak memory grew {peak_growth_mb:.1f} MiB")
        import_id = response.json()["id"]
        aborted = requests.put(
            f"{sandbox.url}/api/v1/accounts/1/sis_imports/{import_id}/abort",
            headers={"Authorization": "Bearer T"},
            timeout=10,
        )
        assert aborted.json()["workflow_state"] == "aborted"
