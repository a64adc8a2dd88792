"""Object-store errors: each carries the HTTP status the gateway answers with, mapped in one place."""

from __future__ import annotations


class ObjectStoreError(Exception):
    """Base of every object-store error; ``http_status`` is what an HTTP route should answer."""

    http_status: int = 500


class InvalidKey(ObjectStoreError):
    """A key or prefix outside the allow-list (see ``keys.validate_key``)."""

    http_status = 400


class ObjectNotFound(ObjectStoreError):
    """No object under that key."""

    http_status = 404


class SignatureInvalid(ObjectStoreError):
    """An upload URL whose signature does not match its method, key and parameters."""

    http_status = 403


class UrlExpired(ObjectStoreError):
    """A correctly signed upload URL used after its expiry time."""

    http_status = 403


class ObjectTooLarge(ObjectStoreError):
    """A body or object bigger than allowed (the signed size, a read limit, or the store's maximum)."""

    http_status = 413


class LengthRequired(ObjectStoreError):
    """A request that must declare its Content-Length and did not.

    The embedded store counts bytes as they arrive, so it accepts chunked bodies and never raises
    this itself; it is here so a route that does require the header maps it like the others.
    """

    http_status = 411


class IncompleteBody(ObjectStoreError):
    """A body that ended before the number of bytes its Content-Length announced."""

    http_status = 400


class MultipartInvalid(ObjectStoreError):
    """A multipart upload that cannot be planned or completed as asked (unknown id, missing part …)."""

    http_status = 400


class ObjectSealed(ObjectStoreError):
    """A write under a prefix that was sealed (a checked, accepted session): its bytes never change."""

    http_status = 409


class VersioningRequired(ObjectStoreError):
    """An S3 bucket without versioning, where a seal could not keep the checked bytes."""

    http_status = 503
