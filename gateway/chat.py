"""The chat completions handler: parse, hand to the router's service, render. Logic lives in `router/`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from gateway.auth.keys import scoped_session_id
from gateway.body import parse_model, read_json_object
from gateway.render import DONE, ChunkWriter, completion_json, error_event
from gateway.responses import JSONResponse
from gateway.state import services_of
from gateway.wire import ChatCompletionRequest, check_message_count
from router.chat import StreamEvent
from router.errors import TiergateError

SESSION_HEADER = "x-tiergate-session"
TASK_HEADER = "x-tiergate-task"
log = logging.getLogger("tiergate.chat")


async def create_chat_completion(request: Request) -> Response:
    received_at = time.perf_counter()
    services = services_of(request)
    body = await read_json_object(request, services.settings.max_body_bytes)
    check_message_count(body, services.settings.max_messages)
    wire = parse_model(ChatCompletionRequest, body)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    headers_in = request.headers
    key = request.state.api_key  # the route's key check left it there; None when auth is off
    session_id = headers_in.get(SESSION_HEADER) or wire.user
    if session_id and key is not None:
        session_id = scoped_session_id(key.id, session_id)  # keys never share a session
    chat = wire.to_internal(request_id, raw=body, session_id=session_id, task_id=headers_in.get(TASK_HEADER))
    chat.caller = services.auth.caller(key)
    if key is not None:  # its rate limits and frontier budget (429, or the caller's bias)
        chat.caller = await services.limits.admit(key, chat.caller, chat.model, chat)
    answer = await services.chat.answer(chat, received_at)
    headers = answer.headers
    if chat.session_id:  # the id the ledger, feedback and the dashboard know the session by (percent-encoded)
        headers = {**headers, "x-tiergate-session": quote(chat.session_id, safe="/")}
    if answer.events is not None:
        writer = ChunkWriter(request_id, answer.model, chat.include_usage)
        return StreamingResponse(
            _sse(writer, answer.events),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    assert answer.completion is not None
    return JSONResponse(completion_json(request_id, answer.completion), headers=headers)


async def _sse(writer: ChunkWriter, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield writer.event(event)
    except TiergateError as exc:
        # Headers are sent already: the error travels in the stream, which OpenAI clients raise as an APIError.
        yield error_event(exc.body())
    except Exception:
        log.exception("stream failed")
        yield error_event(TiergateError("The server had an error while streaming the answer.").body())
    yield DONE
