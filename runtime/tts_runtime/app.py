"""The FastAPI app: routes, error handlers and the X-TTS-Pod header, over the state in
tts_runtime.state and the speech handling in tts_runtime.speech.

The event loop only routes: the text front end and audio encoding run in the
threadpool, inference in the batcher's single worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tts_runtime.api_models import ModelCard, ModelList, SpeechRequest, VoiceCard, VoiceList
from tts_runtime.auth import OPEN_PATHS, ApiKeyMiddleware, ApiKeys
from tts_runtime.errors import ApiError, api_error
from tts_runtime.settings import RuntimeSettings
from tts_runtime.speech import answer_speech
from tts_runtime.state import Runtime, ServedEngine

log = logging.getLogger(__name__)

# Which pod answered (TTS_POD_NAME), on every response.
POD_HEADER = "X-TTS-Pod"


class PodHeaderMiddleware:
    """Puts `X-TTS-Pod: <pod name>` on every HTTP response as its headers go out, so
    streamed responses (headers sent before the body is made) carry it too."""

    def __init__(self, app: ASGIApp, pod_name: str) -> None:
        self.app = app
        self.header = (POD_HEADER.lower().encode("latin-1"), pod_name.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = self.header[0]

        async def send_with_pod(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if bytes(h[0]).lower() != name]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, send_with_pod)


class _RuntimeApp(FastAPI):
    """FastAPI with PodHeaderMiddleware wrapped around its whole middleware stack:
    outside Starlette's ServerErrorMiddleware, whose 500 for an unexpected exception
    would otherwise bypass a middleware added with add_middleware."""

    def __init__(self, *, pod_name: str, **kwargs: Any) -> None:
        self.pod_name = pod_name
        self.auth: Callable[[ASGIApp], ASGIApp] | None = None
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        # The API-key check, when on, sits right inside the pod header: its 401 carries
        # X-TTS-Pod, and comes before anything else of the app (the body is never read).
        app = super().build_middleware_stack()
        if self.auth is not None:
            app = self.auth(app)
        return PodHeaderMiddleware(app, self.pod_name)


async def _on_error(_: Request, exc: Exception) -> JSONResponse:
    """Every error handler: tts_runtime.errors.api_error says what each exception gets."""
    if not isinstance(exc, ApiError | StarletteHTTPException):
        log.exception("unexpected error")
    error = api_error(exc)
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def create_app(settings: RuntimeSettings, engine: ServedEngine) -> FastAPI:
    """The app for one loaded model. Lifespan starts the batcher and the warm-up."""
    runtime = Runtime(settings, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    docs = settings.api_docs  # /docs and /redoc load scripts from a CDN: off unless asked
    app = _RuntimeApp(
        pod_name=settings.pod_name,
        title="tts-runtime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.runtime = runtime
    if settings.api_keys_file is not None:
        keys = ApiKeys(settings.api_keys_file)
        failures = runtime.metrics.auth_failures
        open_paths = set(OPEN_PATHS)
        if docs:  # the docs pages fetch /openapi.json without a key
            open_paths |= {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
        app.auth = lambda inner: ApiKeyMiddleware(
            inner, keys, lambda reason: failures.labels(reason=reason).inc(), open_paths
        )
        log.info("API keys required (%d key(s) in %s)", keys.count, keys.path)
    for error_class in (ApiError, StarletteHTTPException, Exception):
        app.add_exception_handler(error_class, _on_error)

    @app.post(
        "/v1/audio/speech",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SpeechRequest.model_json_schema()}},
            }
        },
        response_class=Response,
    )
    async def speech(request: Request) -> Response:
        """Text in, audio out (OpenAI's audio.speech.create)."""
        return await answer_speech(request, runtime)

    @app.get("/v1/audio/voices")
    async def voices() -> VoiceList:
        return VoiceList(
            data=[VoiceCard(id=n, name=n, speaker_id=s) for n, s in runtime.voices.items()]
        )

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=model_id) for model_id in runtime.model_ids])

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process serves; a failed warm-up means a restart may help."""
        if runtime.warm_up_error:
            return JSONResponse({"status": "failed", "error": runtime.warm_up_error}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready once the model is loaded and a warm-up batch ran; not while draining."""
        details = runtime.readiness()
        return JSONResponse(details, status_code=200 if details["ready"] else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.exposition(), media_type=runtime.metrics.content_type)

    return app
