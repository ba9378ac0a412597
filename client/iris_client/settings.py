"""Defaults of the client and the command line (no imports: ``iris --help`` reads them)."""

__version__ = "0.1.0"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
# The most an answer may hold once decoded: a 10,000-row /predict answer is about 1.2 MB.
MAX_ANSWER_BYTES = 64 * 2**20
# Requests in flight at once for a /predict split into chunks. bench/bench_client.py against
# iris-serve on 2 shared cores: 4 beat 1 by 1.2-1.4x (1 server worker) and 1.4-1.6x (2 workers)
# and beat 2 in every configuration; the README has the figures.
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 16
# Polling a job: often enough for a live progress bar, bounded both ways.
POLL_SECONDS = 0.25
MIN_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 5.0
# A followed job's progress line, when stderr is not a terminal (a CI log): at most this often.
PROGRESS_SECONDS = 5.0
# Shell completion asks the server for ids with this timeout, and offers nothing past it.
COMPLETE_SECONDS = 1.0
