"""Defaults of the client and the command line (no imports: ``iris --help`` reads them)."""

__version__ = "0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
# Requests in flight at once for a /predict split into chunks. Measured against iris-serve
# on 2 cores (bench/bench_client.py): see the README's client section for the figures.
DEFAULT_CONCURRENCY = 2
MAX_CONCURRENCY = 16
# Polling a job: often enough for a live progress bar, bounded both ways.
POLL_SECONDS = 0.25
MIN_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 5.0
