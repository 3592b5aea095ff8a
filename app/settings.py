"""All configuration, read once from ``FILMLESS_*`` environment variables (or ``.env``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cores() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset limits)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILMLESS_", env_file=".env", extra="ignore")

    #: Where the embedded database, the filesystem object store and spool files live.
    data_dir: Path = Path("./data")
    #: PostgreSQL URL. Unset: start a private PostgreSQL under ``data_dir/pg``.
    database_url: SecretStr | None = None
    database_pool_min: int = 2
    #: At least 2: the background sweep holds one connection (its advisory lock) while
    #: it works with another.
    database_pool_max: int = Field(default=10, ge=2)
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

    #: The log's level and form: one JSON object per line, or text for a terminal.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    #: The bearer token a Prometheus scrape of /metrics must send; unset: /metrics answers
    #: only clients on this machine that do not come through a proxy.
    metrics_token: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    #: Worker processes of ``filmless serve``, each with its own event loop, database pool
    #: and render threads, sharing the listening socket. Default: one per core this
    #: process may run on, since one Python process uses at most one core for its own work.
    workers: int = Field(default_factory=lambda: available_cores(), ge=1)
    #: Public base URL used in RetrieveURL/BulkDataURI; unset: derived from each request.
    base_url: str | None = None
    #: Send instances as stored when a WADO request names no transfer syntax, as PS3.18
    #: did before 2016c and some old viewers expect; off: Explicit VR Little Endian, the
    #: default of ``application/dicom`` (PS3.18 §8.7.3, Table 8.7.3-2).
    retrieve_as_stored: bool = False
    #: Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For and
    #: X-Forwarded-Proto are believed. Empty: none, so no client can pose as another
    #: address (the share lockout and the audit trail go by the client's address).
    trusted_proxies: list[str] = Field(default_factory=list)

    #: Largest single STOW-RS part (one DICOM instance) accepted, in bytes (413 beyond).
    max_part_size: int = 4 << 30
    #: Largest STOW-RS request body, in bytes (413 beyond).
    max_request_size: int = 64 << 30
    #: Largest ZIP file ``POST /api/imports`` accepts, in bytes (413 beyond).
    max_import_size: int = 8 << 30
    #: Directory for spooled request parts; default ``data_dir/spool``.
    spool_dir: Path | None = None

    #: Seconds a client may take to send the next piece of its request body, or to take
    #: the next piece of a response: a stalled or vanished client must not hold a spool
    #: file, a database connection or a task for ever.
    client_stall_timeout: float = Field(default=60.0, gt=0)
    #: Pending writes older than this many seconds are removed by the sweep.
    pending_timeout: int = 3600
    #: Seconds between sweeps (0 disables the background sweep).
    sweep_interval: int = 600
    #: Spool files and unfinished object uploads untouched this many seconds are what a
    #: killed process left: each node's sweep removes them. Longer than any request.
    leftover_age: int = Field(default=6 * 3600, ge=60)

    # --- DICOM networking (DIMSE, PS3.7/PS3.8): the listener inside ``filmless serve`` -------
    #: The DICOM port (0: no listener). With several workers, every one listens on it
    #: (``SO_REUSEPORT``) and the kernel spreads associations over them.
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    #: The address the listener binds; unset: the HTTP ``host``.
    dicom_host: str | None = None
    #: The archive's own AE title (the Called AE Title modalities address).
    dicom_ae_title: str = Field(default="FILMLESS", pattern=r"^[ -\[\]-~]{1,16}$")
    #: Seconds to wait for an A-ASSOCIATE (ACSE), a DIMSE message, network activity, and
    #: a connection to a peer (C-MOVE destinations, storage commitment reports).
    dicom_acse_timeout: float = Field(default=30.0, gt=0)
    dicom_dimse_timeout: float = Field(default=60.0, gt=0)
    dicom_network_timeout: float = Field(default=60.0, gt=0)
    dicom_connection_timeout: float = Field(default=10.0, gt=0)
    #: Longest a DIMSE operation may take in the application (storing one instance, one
    #: query page), in seconds; beyond it the operation fails with an "out of resources"
    #: status and the listener goes on.
    dicom_operation_timeout: float = Field(default=300.0, gt=0)
    #: Maximum PDU size the archive receives (PS3.8 D.3.3.1; 0: unlimited).
    dicom_max_pdu_size: int = Field(default=116794, ge=0)
    #: Concurrent associations of the node; one more is rejected with "local limit
    #: exceeded". With several workers each takes an equal share of it.
    dicom_max_associations: int = Field(default=10, ge=1)
    #: DICOM TLS (PS3.15 Annex B): the listener's certificate chain and key (PEM); both
    #: or neither. With ``dicom_tls_ca_file``, peers must present a certificate it signed.
    dicom_tls_cert_file: Path | None = None
    dicom_tls_key_file: Path | None = None
    dicom_tls_ca_file: Path | None = None
    #: Development only: accept associations from unknown calling AE titles as AEs of
    #: this member hospital (echo, store, find, get). Unset (the default): unknown AEs are
    #: rejected.
    dicom_accept_unknown_hospital: str | None = None

    # --- Authentication (bearer JWTs from the hospital's identity provider) -------------
    #: Where verification keys come from: "local" (the archive signs its own tokens with a
    #: key under data_dir: development and the embedded default), "jwks" (an OIDC
    #: provider's JWKS URL), or "pem" (static public keys).
    auth_keys: Literal["local", "jwks", "pem"] = "local"
    auth_jwks_url: str | None = None
    #: Seconds a fetched JWKS is trusted before it is fetched again (an unknown key id
    #: triggers an earlier refetch, at most once per ``auth_jwks_min_refresh``).
    auth_jwks_cache_seconds: int = 3600
    auth_jwks_min_refresh: int = 30
    #: PEM public keys (paths to files), for ``auth_keys=pem``.
    auth_public_key_files: list[Path] = Field(default_factory=list)
    #: The local signing key (created when missing), for ``auth_keys=local``.
    auth_local_key_file: Path | None = None
    auth_issuer: str = "filmless-local"
    auth_audience: str = "filmless"
    #: Accepted signature algorithms, pinned: asymmetric only (never "none", never HMAC).
    auth_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    #: Clock skew tolerated on exp/nbf, in seconds.
    auth_leeway: int = 30
    #: Claim names: the caller's roles (a list or space-separated string) and hospital.
    auth_roles_claim: str = "roles"
    auth_hospital_claim: str = "hospital"
    #: Role names as the identity provider spells them.
    role_reader: str = "reader"
    role_uploader: str = "uploader"
    role_sharer: str = "sharer"
    role_admin: str = "admin"
    role_regional: str = "regional"

    # --- Browser sign-in (the staff console) ---------------------------------------------
    #: The identity provider's issuer URL (OpenID Connect discovery at
    #: ``{issuer}/.well-known/openid-configuration``); unset: no browser sign-in through it.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    #: A confidential client's secret (client_secret_basic); unset: a public client (PKCE only).
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile email"
    #: Development only: a sign-in form that takes any subject, hospital and roles. Refused
    #: unless set, and labelled as such on every page it opens.
    console_dev_signin: bool = False
    #: The web viewer a study opens in from the console, with "{study}" standing for its
    #: Study Instance UID, e.g. "https://ohif.example.org/viewer?StudyInstanceUIDs={study}".
    console_viewer_url: str | None = None
    #: How long a console session lasts, in hours.
    console_session_hours: int = Field(default=8, ge=1, le=24)

    # --- Share links ---------------------------------------------------------------------
    #: The longest a share may last, in days (a share's expiry is required).
    share_max_days: int = Field(default=90, ge=1)
    #: How long a session opened by passing a share's challenge or code lasts, in hours.
    share_session_hours: int = Field(default=12, ge=1)
    #: Lockout: failed challenges per share, and failed codes or challenges per client
    #: address, tolerated within ``share_failure_window`` seconds.
    share_failures_per_share: int = 5
    share_failures_per_client: int = 20
    share_failure_window: int = 900
    #: The patient portal's unauthenticated forms (enrolment codes, sign-in link
    #: requests, enrolment requests): attempts per email address and per client address
    #: within each ``portal_attempt_window`` seconds. Beyond them an attempt is answered
    #: as any other, and nothing is checked or sent.
    portal_attempts_per_address: int = Field(default=5, ge=1)
    portal_attempts_per_client: int = Field(default=30, ge=1)
    portal_attempt_window: int = Field(default=900, ge=1)
    #: The key share secrets are hashed with (created when missing); default under data_dir.
    share_key_file: Path | None = None

    # --- Email (Access Pages sent, owners notified) -------------------------------------
    #: The SMTP server mail goes to; unset (the embedded default): each message is written
    #: to ``data_dir/outbox`` as an .eml file instead, and the log says where.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    #: "starttls" (RFC 3207, port 587), "ssl" (implicit TLS, RFC 8314, port 465) or "none".
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    #: The certificate authorities (PEM) the SMTP server's certificate is checked against
    #: with "starttls" or "ssl", e.g. the hospital's own; unset: the system's.
    smtp_ca_file: Path | None = None
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Filmless <filmless@localhost>"
    #: Seconds to wait for the SMTP server (connection and each reply).
    smtp_timeout: float = Field(default=30.0, gt=0)

    # --- Sending studies out (POST /api/studies/{study}/send) ---------------------------
    #: The archive's own AE title when it associates to send (C-STORE SCU).
    send_ae_title: str = Field(default="FILMLESS", pattern=r"^[ -\[\]-~]{1,16}$")
    #: Attempts per send (the first included), and the delay before the second, in
    #: seconds, doubling after each.
    send_attempts: int = Field(default=3, ge=1, le=10)
    send_retry_delay: float = Field(default=2.0, ge=0)
    #: Seconds to wait for a peer (association, each response, each HTTP read).
    send_timeout: float = Field(default=30.0, gt=0)
    #: STOW-RS roots a study may be sent to, e.g. ["https://pacs.example.org/dicom-web"].
    #: Empty: none (only known application entities).
    send_dicomweb_urls: list[str] = Field(default_factory=list)

    # --- Audit ---------------------------------------------------------------------------
    #: File that DICOM audit messages (PS3.15 A.5, as JSON lines) are appended to for a
    #: hospital's ATNA repository to collect; unset: audit is kept in the database only.
    audit_sink: Path | None = None
    #: Audit Source ID in exported messages (PS3.15 A.5.2).
    audit_source_id: str = "filmless"
    #: Read events (QIDO-RS, WADO-RS, metadata, WADO-URI) waiting to be written, at most,
    #: per process: a request that finds the queue full waits for room (it is never
    #: served unrecorded). Writes record their events in their own transaction.
    audit_queue: int = Field(default=2000, ge=1)

    # --- Browsers on other origins (web viewers) ----------------------------------------
    #: Origins allowed to call the archive from a browser (CORS), e.g.
    #: ["https://viewer.example.org"]. Empty: none. "*" only when listed explicitly.
    cors_origins: list[str] = Field(default_factory=list)
    #: Seconds a browser may cache a CORS preflight answer.
    cors_max_age: int = 600

    #: Memory for recently served thumbnails, in bytes (per process).
    thumbnail_cache_bytes: int = Field(default=64 << 20, ge=0)
    #: Threads decoding and rendering images (rendered, thumbnails, transcoding).
    render_workers: int = Field(default=2, ge=1)
    #: Memory all decoding and rendering of a process may hold at once, in bytes; a
    #: rendering that does not fit waits for others, up to ``render_wait`` seconds (then
    #: 503), and one that could never fit is refused with 503 at once.
    render_memory: int = Field(default=1 << 30, ge=64 << 20)
    render_wait: float = Field(default=30.0, gt=0)

    #: Default and maximum number of QIDO-RS results per request.
    qido_default_limit: int = 100
    qido_max_limit: int = 1000

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def share_key_path(self) -> Path:
        return self.share_key_file or self.data_dir / "share-key"

    @property
    def local_key_path(self) -> Path:
        return self.auth_local_key_file or self.data_dir / "jwt-signing-key.pem"

    @field_validator("auth_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # An HMAC algorithm would let anyone holding a public key forge tokens with it.
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
        refused = [a for a in value if a not in allowed]
        if refused or not value:
            raise ValueError(f"auth_algorithms must be asymmetric JWS algorithms, not {refused or 'none'}")
        return value
