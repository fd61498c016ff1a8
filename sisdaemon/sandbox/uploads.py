"""Receiving an upload: the multipart part `attachment` or the raw body, written straight to a file in the
sandbox's upload folder as it arrives (werkzeug's streaming multipart parser; nothing held in memory).

Source: sis_imports_api_controller.rb#create (multipart vs raw body, `extension`, the charset check) and
app/middleware/prevent_non_multipart_parse.rb (a raw body's options come from the query string).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from werkzeug.wrappers import Request

from sisdaemon.sandbox import options as opts
from sisdaemon.sandbox.records import StoredFile
from sisdaemon.sandbox.store import Store


class SandboxRequest(Request):
    """A Request whose multipart files go straight to files in the sandbox's upload folder (never memory)."""

    upload_dir: Path = Path(tempfile.gettempdir())
    max_form_memory_size = 1_000_000

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        # Closed by receive_upload once parsed, or by discard_upload_files when the upload is cut off.
        stream = tempfile.NamedTemporaryFile("w+b", dir=self.upload_dir, prefix="upload_", delete=False)  # noqa: SIM115
        self.environ.setdefault("sandbox.upload_files", []).append(stream)
        return stream

    def discard_upload_files(self) -> None:
        """Close and remove the files this request's multipart parts were being written to (an upload cut off)."""
        for stream in self.environ.pop("sandbox.upload_files", []):
            stream.close()
            _unlink(stream.name)


@dataclass(frozen=True)
class Upload:
    """What a create request brought: the stored file (None when refused), the options (`params`), the
    non-file multipart fields (`form`), and a refusal if the upload itself is refused."""

    stored: StoredFile | None
    params: dict[str, str]
    form: dict[str, str]
    refusal: opts.Refusal | None


def receive_upload(request: Request, store: Store, upload_dir: Path) -> Upload:
    """Store the upload on disk: the multipart part `attachment`, or the raw body (then every option is in
    the query string: PreventNonMultipartParse). `params` merges the query and the form (the form wins)."""
    request.environ["sandbox.body_read"] = True
    form: dict[str, str] = {}
    if request.mimetype == "multipart/form-data":
        try:
            form = {key: value for key, value in request.form.items(multi=True)}
        except BaseException:  # the client went away mid-upload: no half-written file is kept, nor left open
            if isinstance(request, SandboxRequest):
                request.discard_upload_files()
            raise
        params = {**{k: v for k, v in request.args.items(multi=True)}, **form}
        part = request.files.get("attachment")
        for _name, storage in request.files.items(multi=True):
            if storage is not part:
                storage.close()
                _unlink(getattr(storage.stream, "name", None))
        if part is None:
            return Upload(None, params, form, opts.Refusal(400, {"error": True, "error_message": "Missing attachment"}))
        filename = part.filename or "attachment"
        path = Path(part.stream.name)
        part.stream.close()
        content_type = part.mimetype or "application/octet-stream"
    else:
        params = {k: v for k, v in request.args.items(multi=True)}
        extension = params.get("extension")
        if extension is not None:
            # `if params[:extension]`: Ruby's "" is truthy, so `extension=` names the file `sis_import.`,
            # which is neither .csv nor .zip: it imports nothing. No charset check either.
            filename = f"sis_import.{extension}"
        else:
            charset = request.mimetype_params.get("charset")
            if charset and charset.lower() != "utf-8":
                _drain(request)
                return Upload(None, params, {}, opts.Refusal(400, {"error": "Invalid content type, UTF-8 required"}))
            extension = {"application/zip": "zip", "text/xml": "xml", "text/plain": "csv", "text/csv": "csv"}.get(
                request.mimetype, "zip"
            )
            filename = f"sis_import.{extension}"
        content_type = request.mimetype or "application/octet-stream"
        with tempfile.NamedTemporaryFile("wb", dir=upload_dir, prefix="upload_", delete=False) as sink:
            stream = request.stream
            while chunk := stream.read(1 << 16):
                sink.write(chunk)
            path = Path(sink.name)
    size = path.stat().st_size
    stored = StoredFile(
        id=store.new_file_id(),
        filename=filename,
        display_name=filename,
        content_type=content_type,
        path=path,
        size=size,
    )
    return Upload(store.add_file(stored), params, form, None)


def _drain(request: Request) -> None:
    while request.stream.read(1 << 16):
        pass


def _unlink(name: str | None) -> None:
    if name:
        with contextlib.suppress(OSError):
            os.unlink(name)
