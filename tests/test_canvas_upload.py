"""The upload's body: the file read once in large blocks and hashed on the way, framed as multipart (the options as
form fields, the file as the part ``attachment`` under its job-named file name), against a real HTTP server on
127.0.0.1:0 and against the sandbox."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sisdaemon import canvas, upload_body
from sisdaemon.canvas import BodyDigest, CanvasClient, CanvasError, FaultKind
from sisdaemon.sandbox import Sandbox
from tests.loopback import Exchange, Request, serving

TOKEN = "7~UploadTokenAbcdefghijklmnopqrstuvwxyz0123456789"
CREATED = json.dumps({"id": 7, "workflow_state": "created", "progress": 0}).encode()


@pytest.fixture
def big_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """A users.csv of 2.5 upload blocks (so the last block is a short one), open for reading."""
    data = b"user_id,login_id,status\n" + b"".join(
        b"u%07d,l%07d,active\n" % (n, n) for n in range(int(2.5 * canvas.UPLOAD_BLOCK) // 20)
    )
    path = tmp_path / "users.csv"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd, data
    finally:
        os.close(fd)


def _created(exchange: Exchange) -> None:
    exchange.answer(200, CREATED)


def _post(fd: int, *, name: str = "ab12_users.csv") -> tuple[Request, BodyDigest]:
    digest = BodyDigest()
    with serving(_created) as server:
        client = CanvasClient(server.url, "1", lambda: TOKEN)
        answer = client.create_sis_import(fd, name, [("batch_mode", "true")], digest=digest)
        client.close()
        assert answer["id"] == 7
        (request,) = server.requests
    return request, digest


def test_a_multipart_upload_carries_the_options_as_fields_and_the_file_as_the_attachment_part(
    big_file: tuple[int, bytes],
) -> None:
    fd, data = big_file
    os.lseek(fd, 1000, os.SEEK_SET)  # where the descriptor's offset stands does not matter: the file is read whole
    request, digest = _post(fd, name='ab12_we"ird.csv')

    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert request.headers["content-length"] == str(len(request.body))
    parts = request.body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    fields = {}
    for part in parts[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        fields[head] = value.removesuffix(b"\r\n")
    assert fields[b'\r\nContent-Disposition: form-data; name="import_type"'] == b"instructure_csv"
    assert fields[b'\r\nContent-Disposition: form-data; name="batch_mode"'] == b"true"
    attachment = b'\r\nContent-Disposition: form-data; name="attachment"; filename="ab12_we%22ird.csv"\r\n'
    assert fields[attachment + b"Content-Type: text/csv"] == data
    assert "?" not in request.target  # every option is a form field; no `extension=` (Canvas goes by the name)
    assert (digest.bytes, digest.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())
    assert "upload-sha256" not in [thread.name for thread in threading.enumerate()]  # the hash's thread has ended


def test_a_file_that_shrinks_while_it_is_sent_ends_the_body_with_an_error_not_a_short_request(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"user_id,login_id,status\n" + b"u1,l1,active\n" * 300_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        digest = BodyDigest()
        body = upload_body.UploadBody(fd, os.fstat(fd).st_size, digest=digest)
        first = body.read(8192)
        assert len(first) == canvas.UPLOAD_BLOCK  # large reads, whatever the connection asks for
        os.truncate(path, len(first) + 10)  # a writer cut the file after the first block went out
        assert len(body.read()) == 10
        with pytest.raises(OSError, match="ended at byte"):
            body.read()  # requests turns this into a failed call, of unknown outcome (the connection was made)
        body.close()  # as create_sis_import does however the call ends: the hash's thread ends
    finally:
        os.close(fd)
    assert digest.bytes == len(first) + 10  # not the whole file: the upload worker takes no sha256 from it


def test_the_sandbox_imports_a_multipart_upload_under_its_own_name_and_echoes_the_tag(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id,login_id,first_name,last_name,status\nu1,l1,A,B,active\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        with Sandbox(token=TOKEN, account_id=1, fast=True) as sandbox:
            client = CanvasClient(sandbox.url, "1", lambda: TOKEN)
            created = client.create_sis_import(fd, "ab12_users.csv", [("diff_row_count_threshold", "1000000042")])
            client.close()
            finished = sandbox.wait_for(created["id"])
    finally:
        os.close(fd)
    assert created["diff_row_count_threshold"] == 1000000042
    assert finished["workflow_state"] == "imported"
    assert finished["data"]["counts"]["users"] == 1
    # The operator's file name, with the job id, is what Canvas keeps (a raw body would be "sis_import.csv").
    assert [item["filename"] for item in finished["csv_attachments"]] == ["ab12_users.csv"]


def test_the_hash_runs_beside_the_send_and_its_thread_ends_with_a_call_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"user_id,login_id,status\n" + b"u1,l1,active\n" * (2 * 24 * canvas.UPLOAD_BLOCK // 26))
    # 24 MiB: more than the socket buffers hold, so the send blocks on a server that never reads
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), name="test-accept")
    acceptor.start()
    fd = os.open(path, os.O_RDONLY)
    try:
        host, port = listener.getsockname()[:2]
        client = CanvasClient(f"http://{host}:{port}", "1", lambda: TOKEN, upload_timeout=0.5)
        digest = BodyDigest()
        with pytest.raises(CanvasError) as failure:  # a server that never reads: the call's deadline ends it
            client.create_sis_import(fd, "ab12_users.csv", [], digest=digest)
        client.close()
    finally:
        os.close(fd)
        acceptor.join()
        for sock in accepted:
            sock.close()
        listener.close()
    assert failure.value.kind is FaultKind.TRANSIENT and not failure.value.created_nothing
    assert 0 < digest.bytes < path.stat().st_size  # part of the file was read and hashed, not all of it
    assert not [thread.name for thread in threading.enumerate() if thread.name == "upload-sha256"]


def test_a_small_files_hash_is_taken_in_the_senders_thread_and_a_large_ones_beside_it() -> None:
    small, large = b"u1,l1,active\n" * 100, b"x" * canvas.UPLOAD_BLOCK
    digest = BodyDigest()
    digest.update(small)  # under HASH_INLINE, first: hashed at once, no thread
    assert not [thread.name for thread in threading.enumerate() if thread.name == "upload-sha256"]
    digest.update(large)  # a large block starts the thread; the small ones after it go through it, in order
    digest.update(small)
    assert digest.hexdigest() == hashlib.sha256(small + large + small).hexdigest()
    assert digest.bytes == 2 * len(small) + len(large)
    assert not [thread.name for thread in threading.enumerate() if thread.name == "upload-sha256"]
