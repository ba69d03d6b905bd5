"""What the server takes and how it batches: its limits, each also a `bertkit serve` flag."""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.options import option


@dataclass
class Limits:
    max_body_bytes: int = option(1_000_000, help="request body limit (413 above)")
    max_texts: int = option(256, help="texts per request (413 above)")
    max_chars: int = option(20_000, help="characters per text (413 above)")
    max_queue: int = option(4096, help="texts queued per endpoint (503 above)")
    batch_texts: int = option(256, help="texts per engine batch (default {default})")
    max_wait_ms: float = option(5.0, help="how long a batch waits for more requests (default {default:g})")
