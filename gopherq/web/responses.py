"""Answering with a response model's JSON directly.

A route that returns a pydantic model has FastAPI validate it again against the
route's ``response_model`` and encode the result, and for a plain ``def`` route
it does the validation in its thread pool: a second hop for each request.
``model_response`` answers with pydantic's own JSON of the model instead; the
route keeps ``response_model=`` for its OpenAPI description.
"""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import BaseModel
from pydantic_core import to_json

JSON = "application/json"


def json_response(data: object, status_code: int = 200) -> Response:
    """Plain data (dicts, lists, strings, numbers) as JSON, not validated against a
    model: for pages built from values that were already checked. Non-finite
    numbers become null, as in ``model_response``."""
    return Response(to_json(data, inf_nan_mode="null"), status_code, media_type=JSON)


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON FastAPI would send for it (by alias, nothing left out)."""
    return Response(model.model_dump_json(by_alias=True), status_code, media_type=JSON)
