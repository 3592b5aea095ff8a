"""All configuration, read once from ``FILMLESS_*`` environment variables (or ``.env``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILMLESS_", env_file=".env", extra="ignore")

    #: Where the embedded database, the filesystem object store and spool files live.
    data_dir: Path = Path("./data")
    #: PostgreSQL URL. Unset: start a private PostgreSQL under ``data_dir/pg``.
    database_url: SecretStr | None = None
    database_pool_min: int = 2
    database_pool_max: int = 10
    #: Apply pending migrations at start-up (``filmless migrate`` does it on demand).
    auto_migrate: bool = True

    #: S3 endpoint (AWS, SeaweedFS, MinIO…). Unset, together with ``s3_bucket``: filesystem store.
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    #: Create the bucket at start-up if it does not exist.
    s3_create_bucket: bool = True
    #: Objects larger than this go up as S3 multipart uploads, in parts of this size.
    s3_part_size: int = Field(default=16 << 20, ge=5 << 20)

    host: str = "127.0.0.1"
    port: int = 8000
    #: Public base URL used in RetrieveURL/BulkDataURI; unset: derived from each request.
    base_url: str | None = None

    #: Largest single STOW-RS part (one DICOM instance) accepted, in bytes (413 beyond).
    max_part_size: int = 4 << 30
    #: Largest STOW-RS request body, in bytes (413 beyond).
    max_request_size: int = 64 << 30
    #: Directory for spooled request parts; default ``data_dir/spool``.
    spool_dir: Path | None = None

    #: Pending writes older than this many seconds are removed by the sweep.
    pending_timeout: int = 3600
    #: Seconds between sweeps (0 disables the background sweep).
    sweep_interval: int = 600

    #: Default and maximum number of QIDO-RS results per request.
    qido_default_limit: int = 100
    qido_max_limit: int = 1000

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"
