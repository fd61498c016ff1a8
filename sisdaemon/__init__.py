"""sisdaemon: feed SIS CSV and zip files dropped in a folder to Canvas LMS's SIS Import API."""

from __future__ import annotations

__version__ = "0.1.0"
