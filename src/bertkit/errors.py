"""User-facing errors.

A `BertkitError` carries a one-line message that names the file (or field) and the problem.
The CLI prints it to stderr and exits non-zero without a traceback.
"""

from __future__ import annotations

import os


class BertkitError(Exception):
    """An error caused by the user's input (files, flags, configs), not by a bug in bertkit."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class HTTPError(Exception):
    """A request the server refuses: the status and a one-line message for the client; `kind`
    says why as Text Embeddings Inference's error types do (validation, tokenizer, overloaded,
    backend, unhealthy) or unauthorized, and `param` names the body field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict | None = None,
        *,
        kind: str = "validation",
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.kind, self.param = kind, param
