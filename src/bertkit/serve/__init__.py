"""The HTTP server (`app`: FastAPI routes for every task of a directory, limits, one engine
thread with micro-batching, metrics, the page in `static/`). May import `inference`, `tasks`
and every floor below; only `cli` imports it."""
