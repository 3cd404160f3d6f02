"""OpenAI wire types for chat completions, and the one method that turns a request into our internal `ChatRequest`.

All models share `WireModel`, which accepts fields it does not know (OpenAI adds fields often, clients send them)
and logs their names at debug level. Request fields follow the order of the OpenAI reference.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.schema_check import check_json_schema
from router.chat import (
    ChatRequest,
    Message,
    NamedToolChoice,
    ResponseFormat,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
)
from router.errors import InvalidRequest

log = logging.getLogger("tiergate.wire")


def check_message_count(body: dict[str, Any], limit: int) -> None:
    """Refuse too many messages before validating any: a 4 MB body holds some 100k tiny ones."""
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limit:
        raise InvalidRequest(
            f"Too many messages: {len(messages)}; the limit is {limit}.",
            param="messages",
            code="array_above_max_length",
        )


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _note_ignored(self) -> WireModel:
        if self.model_extra and log.isEnabledFor(logging.DEBUG):
            log.debug("ignored fields on %s: %s", type(self).__name__, sorted(self.model_extra))
        return self


# --- content parts -------------------------------------------------------------------------------------------


class TextPart(WireModel):
    type: Literal["text"]
    text: str


class ImageURL(WireModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(WireModel):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudioPart(WireModel):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(WireModel):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(WireModel):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | InputAudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


# --- messages ------------------------------------------------------------------------------------------------


class FunctionCall(WireModel):
    name: str
    arguments: str


class WireToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(WireModel):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(WireModel):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(WireModel):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(WireModel):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None


class ToolMessage(WireModel):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


WireMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# --- tools and formats ---------------------------------------------------------------------------------------


class FunctionDefinition(WireModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class WireTool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireModel):
    name: str


class NamedToolChoiceWire(WireModel):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(WireModel):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(WireModel):
    type: Literal["text"]


class ResponseFormatJSONObject(WireModel):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(WireModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


WireResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(WireModel):
    include_usage: bool | None = None


# --- the request ---------------------------------------------------------------------------------------------


class ChatCompletionRequest(WireModel):
    messages: list[WireMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    n: int | None = Field(None, ge=1, le=128)
    parallel_tool_calls: bool | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    response_format: WireResponseFormat | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoiceWire | None = None
    tools: list[WireTool] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = None

    def to_internal(
        self, request_id: str, raw: dict[str, Any], session_id: str | None = None, task_id: str | None = None
    ) -> ChatRequest:
        """Check what the wire types cannot express, then build the internal request."""
        if self.n not in (None, 1):
            raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_value")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if len(stop) > 4:
            raise InvalidRequest("At most 4 stop sequences are allowed.", param="stop")
        tools = [
            Tool(
                name=t.function.name,
                description=t.function.description or "",
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in self.tools or ()
        ]
        for index, wire_tool in enumerate(self.tools or ()):
            if wire_tool.function.parameters is not None:
                check_json_schema(
                    wire_tool.function.parameters,
                    param=f"tools[{index}].function.parameters",
                    what=f"function {wire_tool.function.name!r}",
                    object_only=True,
                )
        if isinstance(self.response_format, ResponseFormatJSONSchema) and self.response_format.json_schema.schema_:
            check_json_schema(
                self.response_format.json_schema.schema_,
                param="response_format.json_schema.schema",
                what=f"response format {self.response_format.json_schema.name!r}",
            )
        tool_names = [t.name for t in tools]
        if len(set(tool_names)) != len(tool_names):
            raise InvalidRequest("Tool names must be unique.", param="tools")
        choice: ToolChoice = "auto"
        if isinstance(self.tool_choice, NamedToolChoiceWire):
            if self.tool_choice.function.name not in tool_names:
                raise InvalidRequest(
                    f"tool_choice names function {self.tool_choice.function.name!r}, which is not among the tools.",
                    param="tool_choice",
                )
            choice = NamedToolChoice(self.tool_choice.function.name)
        elif self.tool_choice is not None:
            choice = self.tool_choice
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return ChatRequest(
            request_id=request_id,
            model=self.model,
            messages=[_to_message(m) for m in self.messages],
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=self.parallel_tool_calls is not False,
            response_format=_to_format(self.response_format),
            sampling=Sampling(
                max_tokens=self.max_completion_tokens or self.max_tokens,
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                stop=stop,
                seed=self.seed,
                presence_penalty=self.presence_penalty or 0.0,
                frequency_penalty=self.frequency_penalty or 0.0,
            ),
            stream=bool(self.stream),
            include_usage=bool(self.stream_options and self.stream_options.include_usage),
            session_id=session_id or self.user,
            task_id=task_id,
            user=self.user,
            raw=raw,
        )


def _text_of(content: str | list[Any] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    texts = [p.text for p in content if isinstance(p, TextPart)]
    return "\n".join(texts) if texts else ""


def _to_message(m: SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage) -> Message:
    if isinstance(m, AssistantMessage):
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        return Message("assistant", _text_of(m.content), name=m.name, tool_calls=calls)
    if isinstance(m, ToolMessage):
        return Message("tool", _text_of(m.content), tool_call_id=m.tool_call_id)
    if isinstance(m, UserMessage):
        images = 0 if isinstance(m.content, str) else sum(isinstance(p, ImagePart) for p in m.content)
        return Message("user", _text_of(m.content), name=m.name, image_count=images)
    return Message(m.role, _text_of(m.content), name=m.name)


def _to_format(f: ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema | None) -> ResponseFormat:
    if isinstance(f, ResponseFormatJSONSchema):
        return ResponseFormat("json_schema", f.json_schema.schema_ or {"type": "object"})
    if isinstance(f, ResponseFormatJSONObject):
        return ResponseFormat("json_object")
    return ResponseFormat()
