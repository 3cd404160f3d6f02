"""Render a `ChatRequest` into the prompt text a local model reads.

Tool calling is ours, not llama-cpp-python's chat handlers' (only two of them do tools, neither fits every model):
tools are rendered into the system text, earlier tool calls and results into plain turns, and a call is written by the
model as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, constrained by a grammar where it must be a call.
The chat template itself (turn markers) comes from llama-cpp-python's formatters or the GGUF's own Jinja template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_cpp import Llama, llama_chat_format

from router.chat import ChatRequest, Message, NamedToolChoice

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# Formats whose template drops system messages (Gemma's does): the system text goes into the first user turn,
# which is also what Gemma's own Jinja template does.
_SYSTEM_IN_USER_FORMATS = frozenset({"gemma"})

Formatter = Callable[..., llama_chat_format.ChatFormatterResponse]


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    text: str
    stop: tuple[str, ...]
    add_bos: bool
    forced_prefix: str
    """Text the assistant turn is forced to start with (the tool-call opener when a call is required)."""


def formatter_for(chat_format: str | None, llama: Llama) -> Formatter:
    """The formatter for a llama-cpp-python chat format name, or the GGUF's own template when the name is empty."""
    if chat_format:
        for candidate in (chat_format.replace("-", "_"), chat_format.replace("-", "")):
            fn = getattr(llama_chat_format, f"format_{candidate}", None)
            if callable(fn):
                return fn  # type: ignore[no-any-return]
        raise ValueError(f"unknown chat format {chat_format!r}")
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the GGUF has no chat template in its metadata: set chat_format (for example chatml)")
    eos = llama.token_eos()
    bos = llama.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llama.detokenize([eos], special=True).decode("utf-8", "replace") if eos >= 0 else "",
        bos_token=llama.detokenize([bos], special=True).decode("utf-8", "replace") if bos >= 0 else "",
        stop_token_ids=[eos] if eos >= 0 else None,
    )


def tools_instruction(request: ChatRequest) -> str:
    lines = [
        "You can call the following tools. Each is given as a JSON object with its name, description and the JSON "
        "Schema of its arguments:",
    ]
    lines += [
        json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}, separators=(",", ":"))
        for t in request.tools
    ]
    call = f'{TOOL_CALL_OPEN}{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}{TOOL_CALL_CLOSE}'
    if isinstance(request.tool_choice, NamedToolChoice):
        lines.append(f"Call the tool {request.tool_choice.name} now, answering only with {call}.")
    elif request.tool_choice == "required":
        lines.append(f"Call one of these tools now, answering only with {call}.")
    else:
        lines.append(f"To call a tool, answer only with {call}. If no tool is needed, answer the user directly.")
    return "\n".join(lines)


def _call_text(name: str, arguments: str) -> str:
    try:
        args: Any = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        args = arguments
    return TOOL_CALL_OPEN + json.dumps({"name": name, "arguments": args}, separators=(",", ":")) + TOOL_CALL_CLOSE


def _plain_turns(messages: list[Message], system_extra: str | None, system_in_user: bool) -> list[dict[str, str]]:
    """Messages as system/user/assistant turns only, which every chat template understands."""
    system_parts = [m.content or "" for m in messages if m.role in ("system", "developer")]
    if system_extra:
        system_parts.append(system_extra)
    system_text = "\n\n".join(p for p in system_parts if p)
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "assistant":
            text = (m.content or "") + "".join(_call_text(c.name, c.arguments) for c in m.tool_calls)
            turns.append({"role": "assistant", "content": text})
        elif m.role == "tool":
            result = f"<tool_response>\n{m.content or ''}\n</tool_response>"
            if turns and turns[-1]["role"] == "user" and turns[-1]["content"].startswith("<tool_response>"):
                turns[-1]["content"] += "\n" + result  # several results of parallel calls form one turn
            else:
                turns.append({"role": "user", "content": result})
        else:
            turns.append({"role": "user", "content": m.content or ""})
    if system_text:
        if system_in_user:
            first_user = next((t for t in turns if t["role"] == "user"), None)
            if first_user is None:
                turns.insert(0, {"role": "user", "content": system_text})
            else:
                first_user["content"] = f"{system_text}\n\n{first_user['content']}"
        else:
            turns.insert(0, {"role": "system", "content": system_text})
    return turns


def render_prompt(request: ChatRequest, formatter: Formatter, chat_format: str | None) -> RenderedPrompt:
    extra = tools_instruction(request) if request.offers_tools else None
    turns = _plain_turns(request.messages, extra, system_in_user=chat_format in _SYSTEM_IN_USER_FORMATS)
    result = formatter(messages=turns)
    stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    forced = TOOL_CALL_OPEN if request.wants_tool_call else ""
    return RenderedPrompt(
        text=result.prompt + forced,
        stop=tuple(stop),
        add_bos=not result.added_special,
        forced_prefix=forced,
    )
