"""Settings: one object, read from ``IRIS_``-prefixed environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.persistence import DEFAULT_DATA_DIR

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Every knob of the service; docs/configuration.md lists them (tests/test_docs.py)."""

    model_config = SettingsConfigDict(env_prefix="IRIS_", frozen=True, extra="ignore")

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="models, jobs database and token")
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL for model versions and jobs, shared by every replica "
        "(postgresql://user:password@host:5432/iris); unset: the data directory",
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="server processes")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol over gRPC, on the same address; "
        "0: no gRPC",
    )
    api_token: SecretStr | None = Field(
        None,
        description="bearer token for train, cancel, activate, delete, routing and feedback; "
        "generated if unset",
    )
    log_level: LogLevel = Field("info", description="what the server logs, from critical to debug")
    access_log: bool = Field(
        False, description="one JSON line per request on stdout, with an X-Request-ID"
    )
    max_instances: int = Field(10_000, ge=1, description="rows per /predict or /gradients")
    max_answer_values: int = Field(
        2_000_000, ge=1000, description="numbers in one /gradients answer (422 beyond)"
    )
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="request body size limit")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="time a request body may take to arrive (408 after)"
    )
    max_buffered_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="request body bytes one worker holds at once, all requests together "
        "(503 with Retry-After past it)",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="requests in progress per worker, event streams aside (503 past it)",
    )
    max_idle_connections: int = Field(
        500,
        ge=1,
        description="connections per worker with no request in progress (just opened, a head "
        "not yet complete, kept alive); past it the longest idle is closed",
    )
    max_event_streams: int = Field(
        1000, ge=1, description="job event streams open per worker, all jobs (503 past it)"
    )
    max_event_streams_per_job: int = Field(
        250, ge=1, description="event streams open per worker on one job (503 past it)"
    )
    body_min_rate: float = Field(
        4096,
        ge=0,
        description="bytes a second a request body must average once its grace is over "
        "(408 below it; 0: no floor)",
    )
    body_rate_grace_seconds: float = Field(
        5.0, gt=0, description="time a request body has before its rate is checked"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="time a request head may take to arrive (then closed)"
    )
    max_train_rows: int = Field(100_000, ge=15, description="rows of a training dataset")
    max_training_seconds: float = Field(
        3600.0, gt=0, description="time a training job may run before it is failed"
    )
    model_poll_seconds: float = Field(
        0.2, gt=0, le=5, description="how often each worker checks models/CURRENT"
    )
    job_heartbeat_timeout: float = Field(
        5.0, ge=1, description="seconds without a heartbeat before a job counts as dead"
    )
    jobs_listed: int = Field(50, ge=1, le=1000, description="jobs shown by GET /train")
    blas_threads: int = Field(
        1, ge=1, le=256, description="BLAS threads per server and training process"
    )
    seed: int = Field(0, ge=0, description="seed of the default model trained at first start")
    drift_window: int = Field(
        1000,
        ge=200,
        le=1_000_000,
        description="recent input rows, all workers and replicas together, whose drift "
        "against the stable version's training data is measured",
    )
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="a feature whose population stability index exceeds it drifted"
    )
    monitor_flush_seconds: float = Field(
        0.5,
        gt=0,
        le=1,
        description="how often each worker reads the routing, adds its counts and recent rows "
        "to the shared state (what a crash of the worker can lose) and completes a promotion",
    )
    graceful_shutdown_seconds: float = Field(
        8.0, ge=0, description="time in-flight requests get after SIGTERM"
    )

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def jobs_db(self) -> Path:
        return self.data_dir / "jobs.sqlite3"


@lru_cache
def get_settings() -> Settings:
    return Settings()
