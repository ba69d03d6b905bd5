"""Every route's request body, declared as a pydantic model: the OpenAPI document at /docs and
/openapi.json describes them, and the OpenAI and TEI routes validate their bodies with them
(unknown fields are ignored, as TEI and OpenAI ignore them). The native task routes' bodies are
built from each task's `request_fields`, so the task registry stays their one owner."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bertkit.errors import HTTPError
from bertkit.inference.pipelines import TOP_K

Side = Literal["Right", "Left"]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# ---- OpenAI ----------------------------------------------------------------------------------


class EmbeddingsRequest(_Body):
    """POST /v1/embeddings, as OpenAI's embeddings API takes it."""

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text, a list of texts, or token ids (one list, or a list of lists)"
    )
    model: str | None = Field(None, description="the served model's name (any name is answered)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float lists, or base64 of little-endian float32"
    )
    dimensions: int | None = Field(None, description="only the model's own size: no model here truncates")
    user: str | None = Field(None, description="ignored")


# ---- Text Embeddings Inference ---------------------------------------------------------------


class EmbedRequest(_Body):
    """POST /embed."""

    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Side = "Right"


class PredictRequest(_Body):
    """POST /predict: a text, a pair [text, text], or a batch of texts and pairs [[text], [a, b]]."""

    inputs: str | list[str] | list[list[str]]
    raw_scores: bool = False
    truncate: bool = False
    truncation_direction: Side = "Right"


class RerankRequest(_Body):
    """POST /rerank: the texts ranked by their score as the query's pair, highest first."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: Side = "Right"


class TokenizeRequest(_Body):
    """POST /tokenize."""

    inputs: str | list[str]
    add_special_tokens: bool = True


# ---- native ----------------------------------------------------------------------------------


class NativeEmbedRequest(_Body):
    """POST /v1/embed."""

    texts: list[str]
    pooling: Literal["mean", "cls"] | None = None
    normalize: bool | None = None


class FillMaskRequest(_Body):
    """POST /v1/fill-mask."""

    texts: list[str]
    top_k: int = Field(TOP_K, ge=1, le=100)


def task_request(cls: Any) -> type[BaseModel]:
    """The body of a task's route (/v1/classify, /v1/ner, /v1/qa) from the task's fields."""
    fields: dict[str, Any] = {k: (list[str], ...) for k in cls.request_fields}
    fields |= {k: (list[str] | None, None) for k in cls.optional_request_fields}
    return create_model(f"{cls.name.title()}Request", __base__=_Body, **fields)


def parse(model: type[_Body], raw: bytes, status: int) -> Any:
    """The body as `model`, or an HTTPError with `status` naming the first field at fault."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"])
        if err["type"] == "json_invalid":
            raise HTTPError(400, f"invalid JSON: {err['msg']}") from None
        param = str(err["loc"][0]) if err["loc"] else None
        message = f"{where}: {err['msg']}" if where else err["msg"]
        raise HTTPError(status, message, param=param) from None


def openapi_body(model: type[BaseModel]) -> dict:
    """`openapi_extra` declaring `model` as a route's JSON body (see `add_schemas`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def add_schemas(document: dict, models: list[type[BaseModel]]) -> dict:
    """The OpenAPI document with `models` (and the models they use) in its components."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    document.setdefault("components", {}).setdefault("schemas", {}).update(top.get("$defs", {}))
    return document
