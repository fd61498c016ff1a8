"""The proof suite runs the real daemon against the sandbox: it shares tests/daemon's fixtures."""

from tests.daemon.conftest import daemon_process, run_daemon, sandbox, spool  # noqa: F401
from tests.proof.uploaders import sshd  # noqa: F401
