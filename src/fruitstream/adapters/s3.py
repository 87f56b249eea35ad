"""Object store on S3-compatible storage (AWS S3, DigitalOcean Spaces, MinIO, SeaweedFS)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from fruitstream.config import FruitstreamSettings, part_config
from fruitstream.errors import MissingDependencyError, NotFoundError, StorageError
from fruitstream.ports import Health


def _reason(exc: Exception) -> str:
    """The service's error code and message, never the request's credentials."""
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {}) if isinstance(response, dict) else {}
    if err:
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
    return type(exc).__name__ + (f": {exc}" if "Credential" not in type(exc).__name__ else "")


class S3Settings(FruitstreamSettings):
    """The bucket and how to reach it (``FRUITSTREAM_S3_*``); no keys: boto3's own chain."""

    model_config = part_config("FRUITSTREAM_S3_")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    bucket: str = "fruitstream"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None


class S3ObjectStore:
    """The bucket stays private: photos are read back with credentials, never by URL."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def connect(cls, settings: S3Settings) -> S3ObjectStore:
        """A client for ``bucket``; no key given: boto3's own chain (environment, files,
        instance role)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise MissingDependencyError("boto3", "distributed") from exc
        key, secret = settings.access_key_id, settings.secret_access_key
        client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=key.get_secret_value() if key is not None else None,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        return cls(client, settings.bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket when absent (private: no ACL is ever granted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageError(f"bucket {self.bucket}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 endpoint unreachable: {_reason(exc)}") from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot create bucket {self.bucket}: {_reason(exc)}") from exc

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ContentType": content_type} if content_type else {}
        for attempt in (1, 2):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "NoSuchBucket" and attempt == 1:
                    self.ensure_bucket()  # first upload to a new bucket
                    continue
                raise StorageError(f"cannot store {key}: {_reason(exc)}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"cannot store {key}: {_reason(exc)}") from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise NotFoundError(f"object {key} does not exist in the store") from exc
            raise StorageError(f"cannot read {key}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read {key}: {_reason(exc)}") from exc
        return body

    def health(self) -> Health:
        from botocore.exceptions import BotoCoreError, ClientError

        endpoint = self.client.meta.endpoint_url
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket", "NotFound"}:
                # Reachable and answering; the first upload creates the bucket.
                return Health("storage", True, f"S3 at {endpoint}, bucket {self.bucket} not yet")
            return Health("storage", False, f"S3 bucket {self.bucket}: {_reason(exc)}")
        except BotoCoreError as exc:
            return Health("storage", False, f"S3 bucket {self.bucket}: {_reason(exc)}")
        return Health("storage", True, f"S3 bucket {self.bucket} at {endpoint}")
