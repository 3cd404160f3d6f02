"""`tiergate eval-compression` on a small BFCL category, without the local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_compression.evaluation import main, render_for_local_model
from prompt_compression.render import render_tools
from router.chat import ChatRequest, Message, Tool, ToolCall

BFCL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bfcl"


def test_eval_prints_a_row_per_category_and_appends_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "BENCHMARKS.md"
    argv = ["--data", str(BFCL), "--category", "live_parallel", "--category", "irrelevance", "--no-local"]
    argv += ["--repeats", "2"]
    assert main([*argv, "--append", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "category" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["irrelevance", "live_parallel"]
    irrelevance = rows[0].split("|")
    assert irrelevance[2].strip() == "240"
    assert irrelevance[3].strip() == "240/240"  # irrelevance keeps its one tool and gains none
    assert irrelevance[6].strip() == "0"
    written = out.read_text()
    assert f"--data {BFCL} --category live_parallel" in written and rows[1] in written


def test_local_rendering_carries_tools_and_tool_traffic() -> None:
    request = ChatRequest(
        "r",
        "local",
        [
            Message("system", "Be brief."),
            Message("user", "Weather?"),
            Message("assistant", None, tool_calls=(ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)),
            Message("tool", "sunny", tool_call_id="c1"),
        ],
        tools=[Tool("get_weather", "Weather now.", {"type": "object"})],
    )
    text = render_for_local_model(request)
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nYou may call")
    assert '{"type": "function", "function": {"name": "get_weather", "description": "Weather now."' in text
    minified = render_for_local_model(request, render_tools)
    assert '\n{"name":"get_weather","description":"Weather now.","parameters":{"type":"object"}}\n' in minified
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text
    assert text.endswith("<start_of_turn>model\n")
