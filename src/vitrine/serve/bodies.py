"""Request and response bodies of the HTTP API: JSON or form fields in, one JSON shape out, all in the OpenAPI spec.

`POST /search`, `POST /tag`, `POST /embed` and `POST /products` take either `application/json` or a form
(`multipart/form-data`, `application/x-www-form-urlencoded`); both are validated by a pydantic model, so a bad field
gets the same 400 in either form (the error contract: README, "Errors"). The forms are parsed with limits on their
parts (fields, files, bytes a text field).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.datastructures import UploadFile
from starlette.requests import Request

from vitrine.config_file import loads_object
from vitrine.constants import SEARCH_MODES
from vitrine.data.text import is_unicode
from vitrine.errors import InvalidRequest, TooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FORM_FIELDS = 64  # a search form has six names; repeated filters count once each
MAX_FORM_FILES = 1  # one image a form; /embed takes up to the batch limit
MAX_FIELD_BYTES = 64 * 1024  # one text field of a form (a vocabulary included)

Binary = Annotated[Any, WithJsonSchema({"type": "string", "format": "binary"})]
FilterValues = str | list[str]
Mode = Literal[SEARCH_MODES]  # typing.Literal takes a tuple as its values
OnError = Literal["report", "fail"]
ON_ERROR = Field(
    "report",
    description="report: each item's result or error in its place (one bad item does not fail the rest); "
    "fail: the first bad item fails the whole request with its status",
)


class _Ranking(BaseModel):
    """The ranking fields every search body takes."""

    mode: Mode | None = Field(
        None,
        description="hybrid: vector and BM25 fused; vector: cosine only; lexical: BM25 only "
        "(default: the server's, hybrid unless configured)",
    )
    soft_filters: bool = Field(
        True,
        description='query words that name a catalog value ("women", "red", "sweatshirt") boost '
        "products with that value; on a composed query, the modification's words",
    )
    exclude_reference: bool = Field(
        True, description="leave the catalog product given as image_url out of its own results"
    )
    min_score: float | None = Field(None, description="leave out hits whose cosine to the query is lower")
    offset: int = Field(0, strict=True, description="skip this many hits first (paging)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchJSON(_Ranking, _Body):
    """A search as JSON: text, or an image (base64 or a catalog image URL) with an optional modification."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "blue jeans", "k": 5},
                {
                    "image_url": "/products/1163/image", "modification": "in red with long sleeves",
                    "filters": {"gender": ["Women"]},
                },
            ]
        },
    )
    text: str | None = Field(None, description="text query")
    image: str | None = Field(None, description="query image: base64 of the file's bytes (a data: URL works too)")
    image_url: str | None = Field(None, description="a catalog product's image URL, /products/{id}/image")
    modification: str | None = Field(None, description='with an image: what should change, e.g. "in black"')
    k: int = Field(10, strict=True, description="number of results")
    filters: dict[str, FilterValues] = Field(
        default_factory=dict, description='field -> value or values (any of them), e.g. {"gender": ["Women", "Girls"]}'
    )


class SearchForm(_Ranking, _Body):
    """The same search as form fields; filters are repeated `filter=field=value` fields."""

    text: str | None = Field(None, description="text query")
    image: Binary = Field(None, description="query image", json_schema_extra=lambda schema: schema.pop("default", None))
    image_url: str | None = Field(None, description="a catalog product's image URL, /products/{id}/image")
    modification: str | None = Field(None, description='with an image: what should change, e.g. "in black"')
    k: int = Field(10, description="number of results")
    offset: int = Field(0, description="skip this many hits first (paging)")
    filter: list[str] = Field(
        default_factory=list, description="field=value; repeat for more (same field: any of the values)"
    )


class SearchBatchJSON(_Body):
    """Several searches answered together: their texts and images are encoded in one forward pass each."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"queries": [{"text": "blue jeans", "k": 3}, {"text": "red dress", "filters": {"gender": "Women"}}]}
            ]
        },
    )
    queries: list[SearchJSON] = Field(description="the searches, answered in this order")
    on_error: OnError = ON_ERROR


class EmbedJSON(_Body):
    """Texts and/or images to embed: images as base64 or as a catalog product's image URL."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"texts": ["blue jeans", "a red summer dress"]},
                {"image_urls": ["/products/1163/image"], "texts": ["in black"]},
            ]
        },
    )
    texts: list[str] = Field(default_factory=list, description="texts, embedded by the text tower")
    images: list[str] = Field(
        default_factory=list, description="images: base64 of each file's bytes (data: URLs work too)"
    )
    image_urls: list[str] = Field(
        default_factory=list, description="catalog products' image URLs, /products/{id}/image"
    )
    on_error: OnError = ON_ERROR


class EmbedForm(_Body):
    """The same as a form: repeated `text` fields, `image` uploads and `image_url` fields."""

    text: list[str] = Field(default_factory=list, description="a text; repeat for more")
    image: list[Binary] = Field(default_factory=list, description="an image upload; repeat for more")
    image_url: list[str] = Field(default_factory=list, description="a catalog product's image URL; repeat for more")
    on_error: OnError = ON_ERROR


AttributeValue = str | int | float | None


class ProductJSON(_Body):
    """A product to add or replace, as JSON: its image as base64 or a catalog product's image URL (copied)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "sku-1", "title": "Red summer dress", "attributes": {"gender": "Women", "baseColour": "Red"},
                    "image": "<base64>",
                }
            ]
        },
    )
    id: str = Field(description="product id: 1-128 letters, digits and . _ : - (starting with a letter or digit)")
    title: str | None = Field(None, description="product title")
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict, description='attribute -> value, e.g. {"gender": "Women"}'
    )
    image: str | None = Field(None, description="the product image: base64 of the file's bytes (a data: URL works too)")
    image_url: str | None = Field(
        None, description="or a catalog product's image URL, /products/{id}/image, whose image is copied"
    )
    new_attributes: bool = Field(
        False, description="allow attribute names the catalog does not have yet (refused otherwise)"
    )


class ProductForm(_Body):
    """The same product as a form; `attributes` is a JSON object in a text field."""

    id: str = Field(description="product id")
    image: Binary = Field(
        None, description="product image", json_schema_extra=lambda schema: schema.pop("default", None)
    )
    image_url: str | None = Field(None, description="or a catalog product's image URL, whose image is copied")
    title: str | None = Field(None, description="product title")
    attributes: str | None = Field(None, description='JSON object of attribute -> value, e.g. {"gender": "Women"}')
    new_attributes: bool = Field(
        False, description="allow attribute names the catalog does not have yet (refused otherwise)"
    )


class TagJSON(_Body):
    """An image to tag, as base64 or a catalog image URL, and optionally a vocabulary."""

    image: str | None = Field(None, description="the image: base64 of the file's bytes (a data: URL works too)")
    image_url: str | None = Field(None, description="a catalog product's image URL, /products/{id}/image")
    vocabulary: dict[str, Any] | str | None = Field(
        None, description="attribute vocabulary as an object, or YAML/JSON text (default: the shipped one)"
    )


class TagForm(_Body):
    image: Binary = Field(description="the image to tag")
    vocabulary: str | None = Field(None, description="attribute vocabulary as YAML or JSON (default: the shipped one)")


# ---- responses ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="stable and machine-readable: match on it, never on the message (README, Errors)")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Product(BaseModel):
    id: str
    title: str | None
    attributes: dict[str, Any]
    tags: dict[str, Any]
    image_url: str


class Hit(Product):
    rank: int
    score: float
    similarity: float | None = None


class QueryEcho(BaseModel):
    kind: str
    text: str | None
    modification: str | None
    k: int
    filters: dict[str, list[str]]
    mode: str = "vector"
    offset: int = 0
    soft_filters: dict[str, Any] | None = None
    excluded: list[str] = []


class Relevance(BaseModel):
    close_match: bool | None
    level: float | None
    top_similarity: float | None
    basis: str
    words_named: bool = False


class FacetValue(BaseModel):
    value: str
    count: int


class SearchResult(BaseModel):
    query: QueryEcho
    took_ms: float
    total: int = 0
    relevance: Relevance | None = None
    facets: dict[str, list[FacetValue]] = {}
    results: list[Hit]


class SearchBatchResult(BaseModel):
    took_ms: float
    errors: int = 0
    results: list[SearchResult | ErrorBody]


class Embedding(BaseModel):
    vector: list[float]


class EmbedResult(BaseModel):
    model: str
    runtime: str
    dim: int
    took_ms: float
    errors: int
    texts: list[Embedding | ErrorBody]
    images: list[Embedding | ErrorBody]
    image_urls: list[Embedding | ErrorBody]


class ProductPage(BaseModel):
    total: int
    offset: int
    limit: int
    products: list[Product]


class TagResult(BaseModel):
    tags: dict[str, dict[str, Any]]


class Facet(BaseModel):
    field: str
    predicted: bool = Field(
        False, description="filled in by the tagger (predicted_<field>): the catalog has no such column"
    )
    filled: int = Field(
        0,
        description="products whose value the tagger filled in: the catalog's cell was blank, or it has no such column",
    )


class CatalogFacets(BaseModel):
    source: Literal["index", "fields"] = Field(
        description="index: the schema saved with the index; fields: an index built "
        "before schemas were saved, read from its stored fields"
    )
    attributes: list[str] = Field(description="the catalog's attribute columns, in column order")
    facets: list[Facet] = Field(
        description="the fields to filter by: the catalog's categorical columns, then predicted tags"
    )


class UpsertResult(Product):
    created: bool


COMPONENTS = (SearchJSON, SearchForm, SearchBatchJSON, TagJSON, TagForm, EmbedJSON, EmbedForm, ProductJSON, ProductForm)


def error_responses(*statuses: int) -> dict:
    """The `responses=` of a route: each status answered with the JSON error body."""
    return {status: {"model": ErrorBody, "description": _REASONS.get(status, "refused")} for status in statuses}


_REASONS = {
    400: "invalid request: malformed JSON, a field of the wrong type or out of range, conflicting or missing fields, "
    "an unknown filter value or attribute",
    401: "no bearer token",
    403: "token not valid",
    404: "not found",
    413: "over a size limit",
    415: "no or another Content-Type than JSON or a form, or an upload that is not an image",
    503: "the index's Milvus server is down, restarting or loading the collection (Retry-After says when to try "
    "again); "
    "a write so refused was not acknowledged",
    507: "insufficient storage: the server's disk is full; the write was not made and what was committed before is "
    "intact",
}


def request_body(json_model: type[BaseModel] | None, form_model: type[BaseModel] | None) -> dict:
    """`openapi_extra` documenting a body taken as JSON and/or as a form."""
    content = {}
    if json_model:
        content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}
    if form_model:
        content["multipart/form-data"] = {"schema": {"$ref": f"#/components/schemas/{form_model.__name__}"}}
    return {"requestBody": {"required": True, "content": content}}


def add_components(schema: dict) -> dict:
    """Put the body models (and what they nest) into the spec's components, and answer validation with the contract's
    400 where FastAPI documents its own 422."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in COMPONENTS:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400",
                    {
                        "description": _REASONS[400],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    },
                )
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: Any) -> Model:
    """`model` from `data`, or a 400 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc.errors())) from None


def validation_message(errors: list[dict], skip: int = 0) -> str:
    """`field.path: problem; ...` for pydantic's errors (`skip` drops leading location parts, e.g. FastAPI's
    "query")."""
    return (
        "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[skip:]) or 'body'}: {e.get('msg')}" for e in errors)
        or "invalid request"
    )


async def read_body(
    request: Request, json_model: type[BaseModel], form_model: type[BaseModel] | None, max_files: int = MAX_FORM_FILES
) -> BaseModel:
    """The request's body as `json_model` (JSON) or `form_model` (a form); 415 naming a missing or other
    Content-Type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        data = loads_object(await request.body(), "the body", InvalidRequest)
        return validated(json_model, checked_text(data))
    accepted = "application/json" + (
        "" if form_model is None else " or a form (multipart/form-data, application/x-www-form-urlencoded)"
    )
    if not content_type:
        if await request.body():  # a body whose kind is not said would be misread: named as the problem it is
            raise UnsupportedMediaType(
                f"the request has no Content-Type header: send the body as {accepted} and say so in Content-Type"
            )
        return validated(form_model or json_model, {})  # nothing sent: the missing fields are named
    if form_model is None or content_type not in FORM_TYPES:
        raise UnsupportedMediaType(f"send the body as {accepted}, not {content_type} (the Content-Type header)")
    form = await request.form(max_files=max_files, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES)
    data: dict[str, Any] = {}
    for name in form.keys():
        values = form.getlist(name)
        if name in form_model.model_fields and _is_list(form_model, name):
            if any(isinstance(v, UploadFile) for v in values) and not _is_binary(form_model, name):
                raise InvalidRequest(f"{name}: expected text fields, got a file")
            data[name] = [v for v in values if not (isinstance(v, str) and not v and _is_binary(form_model, name))]
        else:
            if len(values) > 1:
                raise InvalidRequest(f"{name}: give it once, got {len(values)} values")
            value = values[0]
            if isinstance(value, UploadFile) and not _is_binary(form_model, name):
                raise InvalidRequest(f"{name}: expected a text field, got a file")
            if _is_binary(form_model, name) and isinstance(value, str) and not value:
                continue  # an empty file input of a browser form
            data[name] = value
    return validated(form_model, data)


def checked_text(value: Any, where: str = "body") -> Any:
    """`value` unchanged, or a 400 when a string in it holds a lone surrogate (JSON and YAML escapes can make one,
    and no encoder, tokenizer or database takes it)."""
    if isinstance(value, str):
        if not is_unicode(value):
            raise InvalidRequest(f"{where}: holds a lone surrogate (an escape such as \\ud800 that is not a character)")
    elif isinstance(value, dict):
        for key, item in value.items():
            checked_text(key, where)
            checked_text(
                item, f"{where}.{key}" if isinstance(key, str) and key.isprintable() and len(key) < 40 else where
            )
    elif isinstance(value, list):
        for index, item in enumerate(value):
            checked_text(item, f"{where}[{index}]")
    return value


def load_yaml(text: str, name: str) -> Any:
    """YAML (or JSON) text from a request: a 400 naming `name` when it is not valid, too deep, or holds surrogates."""
    import yaml

    try:
        return checked_text(yaml.safe_load(text), name)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{name} is not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{name} is not valid YAML or JSON: nested too deeply") from None


def _is_list(model: type[BaseModel], name: str) -> bool:
    return getattr(model.model_fields[name].annotation, "__origin__", None) is list


def _is_binary(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    if field is None:
        return False
    inner = getattr(field.annotation, "__args__", ()) if _is_list(model, name) else ()
    return any(isinstance(m, WithJsonSchema) for m in field.metadata) or any(
        isinstance(m, WithJsonSchema) for arg in inner for m in getattr(arg, "__metadata__", ())
    )


def decode_base64_image(text: str, name: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image (or a `data:...;base64,` URL): 413 over the upload limit, 400 when not base64."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InvalidRequest(f"{name}: a data: URL must be base64 (data:image/jpeg;base64,...)")
    text = "".join(text.split())
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise TooLarge(f"{name} is over the upload limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{name} is not valid base64") from None
    if len(data) > max_bytes:
        raise TooLarge(f"{name} is over the upload limit of {max_bytes} bytes")
    if not data:
        raise InvalidRequest(f"{name} is empty")
    return data
