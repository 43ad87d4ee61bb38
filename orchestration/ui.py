"""`make ui`: exec `dagster dev` with default signal handlers.

A process started from a background job inherits SIGINT/SIGTERM as ignored, and `dagster dev`
then cannot be stopped; restoring the defaults before exec makes Ctrl-C (or a SIGINT to the PID)
stop the webserver, daemon and code server together.
"""

import os
import signal
import sys

from ml.allocator import keep_freed_pages


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    keep_freed_pages()  # for the processes that train in Dagster's steps (`ml.allocator`)
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.execv(dagster, [dagster, "dev", *args])


if __name__ == "__main__":
    main()
