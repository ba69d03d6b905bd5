"""What the server takes, how it batches and who may call it: each setting also a `bertkit serve`
flag."""

from __future__ import annotations

from dataclasses import dataclass

from bertkit.options import option


@dataclass
class Limits:
    max_body_bytes: int = option(1_000_000, help="request body limit (413 above)")
    max_texts: int = option(256, help="texts per request (413 above; TEI's max_client_batch_size)")
    max_chars: int = option(20_000, help="characters per text (413 above)")
    max_queue: int = option(4096, help="texts queued per endpoint (503 with Retry-After above)")
    max_concurrent_requests: int = option(
        512, help="requests in flight in the whole server (429 above; default {default})"
    )
    max_batch_tokens: int = option(
        16384,
        help="tokens per engine batch the server collects from its queue (TEI's setting; one "
        "request over it runs alone; default {default})",
    )
    batch_texts: int = option(256, help="texts per engine batch, a second bound (default {default})")
    max_wait_ms: float = option(5.0, help="how long a batch waits for more requests (default {default:g})")


@dataclass
class Serving:
    api_key: str | None = option(
        None,
        repr=False,
        help="the key clients must send as 'Authorization: Bearer KEY' on every route but the page, "
        "/health, /ready and the OpenAPI docs (401 without it; a flag shows in the process list, a file "
        "does not); default: none, the server answers anyone",
    )
    api_key_file: str | None = option(None, help="a file of keys, one a line (with or without --api-key)")
    public_metrics: bool = option(False, help="/metrics answers without a key")
    cors_allow_origin: list[str] = option(
        default_factory=list,
        nargs="+",
        metavar="ORIGIN",
        help="origins a browser may call the server from (CORS), e.g. https://app.example.com or '*'; "
        "default: none",
    )
    rerank_label: str | None = option(
        None,
        help="/rerank on a two-class pair model: the label whose probability is the score (default: "
        "the label named 1, positive or entailment, else the last)",
    )
    keep_alive: int = option(
        75,
        help="seconds an idle client connection stays open (default {default}, nginx's): longer than "
        "client pools keep one (httpx, requests: 5 s), so a reused connection is not closed under a "
        "request",
    )
    model_name: str | None = option(
        None, help="the model's name in /v1/models, /info and answers (default: --model as given)"
    )
