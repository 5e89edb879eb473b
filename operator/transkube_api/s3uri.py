"""The one rule for S3 URIs, used by the CRD schema, the models, the operator, the worker, the shim and the CLI.

`s3://bucket/key`: the bucket is an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or
digit); the key is everything after the first `/` after the bucket, taken literally as the AWS CLI takes it:
spaces, unicode, `+ & # % = ? :` are characters of the key, never URL syntax, and nothing is percent-decoded.
A key is non-empty and has no control characters (U+0000-U+001F, U+007F-U+009F). A key ending in `/` is a
prefix (hls, dash, thumbnails and sprite outputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field

BUCKET_PATTERN = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
# Control characters (Unicode category Cc), written so that Python's re, Go's RE2 (the API server) and Rust's
# regex (pydantic) read the class alike.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
S3_URI_PATTERN = rf"^s3://{BUCKET_PATTERN}/[^{CONTROL_CHARS}]+$"
MAX_URI_LENGTH = 1024
SCHEME = "s3://"

_BUCKET = re.compile(BUCKET_PATTERN)
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")


class S3UriError(ValueError):
    """Not a URI by the rule; the message says what is wrong (callers name the field)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        return self.key.endswith("/")


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/key` -> S3Location(bucket, key), the key exactly as written. Raises S3UriError."""
    if not uri.startswith(SCHEME):
        raise S3UriError(f"must be s3://bucket/key, got {_show(uri)}")
    bucket, slash, key = uri[len(SCHEME):].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise S3UriError(f"{_show(bucket)} is not an S3 bucket name (3-63 characters: a-z, 0-9, '.' and '-', "
                         "starting and ending with a letter or digit)")
    if not slash or not key:
        raise S3UriError("the object key is empty: expected s3://bucket/key")
    if (bad := _CONTROL.search(key)) is not None:
        at = len(SCHEME) + len(bucket) + 1 + bad.start() + 1
        raise S3UriError(f"the object key contains a control character (U+{ord(bad.group()):04X}, character {at} "
                         "of the URI)")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise S3UriError("the object key is not valid Unicode (it has a lone surrogate)")
    if len(uri) > MAX_URI_LENGTH:
        raise S3UriError(f"at most {MAX_URI_LENGTH} characters")
    return S3Location(bucket, key)


def _show(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _validate(uri: str) -> str:
    parse_s3_uri(uri)
    return uri


# The field type of every URI in the API: the CRD gets the pattern and length, the models the checks with
# their specific messages (pydantic's own pattern error would only quote the regex).
S3Uri = Annotated[str, Field(max_length=MAX_URI_LENGTH, json_schema_extra={"pattern": S3_URI_PATTERN}),
                  AfterValidator(_validate)]
