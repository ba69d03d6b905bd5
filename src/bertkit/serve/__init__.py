"""The HTTP server: `app` (the FastAPI app and `bertkit serve`), `server` (the engine side:
micro-batchers on one engine thread, readiness, the in-flight bound), `batcher` (token-budget
batching, metrics), `model` (what a directory serves), the three dialects' routes (`native`,
`openai_api`, `tei`; request bodies in `schemas`, error shapes in `dialects`), `access` (API
keys, request ids, CORS), `limits` (the settings), the page in `static/`. May import `inference`,
`tasks` and every floor below; only `cli` imports it."""
