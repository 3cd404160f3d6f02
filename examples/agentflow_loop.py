"""An AgentFlow-style agent loop against Tiergate: planner -> executor -> verifier -> generator, on Game of 24.

    python examples/agentflow_loop.py --base-url http://127.0.0.1:8080/v1 --puzzles "1 1 1 13" "4 7 8 8"

Each puzzle is one agent session (`X-Tiergate-Session`), its task id the puzzle (`X-Tiergate-Task`). Per step:
- the planner (an LLM call, model `auto`) answers in AgentFlow's format: `Justification / Context / Sub-Goal /
  Tool Name`, choosing among the tools its prompt lists (here one: `Python_Expression_Tool`). Tiergate's
  `agentflow_planner` verifier checks that format on local answers and escalates a planner step that fails it;
- the executor writes the tool's command (an LLM call), and the tool evaluates it exactly: the expression is parsed
  with `ast` and only numbers, + - * / and parentheses are evaluated, in fractions (never `eval`);
- the verifier checks the result exactly: each puzzle number used once, and the value is 24;
- after a correct step, or `--max-steps` steps, the generator (an LLM call) writes the final answer, which is checked
  exactly again. The outcome goes to Tiergate as session feedback (`POST /v1/feedback`), so the ledger's cost per
  successful outcome counts it. Per puzzle it prints each step's tier and rule (from the response headers), the
  session's cost (from the ledger, `GET /dashboard/sessions/{id}`: that needs an admin key where keys are checked),
  and the result.

With a frontier model configured in the gateway (and its provider key in the gateway's environment) this runs for
real; Tiergate's tests run it against a scripted upstream. The API key is the gateway's (`--api-key`, else
`TIERGATE_API_KEY`, else `OPENAI_API_KEY`).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

import httpx
import openai

TOOL_NAME = "Python_Expression_Tool"
TARGET = 24

PLANNER_PROMPT = """Task: Game of 24. Combine the numbers {numbers} with + - * / and parentheses, using each number
exactly once, to make 24.
Available tools: [{tool}]
Tool metadata: {tool} evaluates one arithmetic expression exactly and returns its value.
Previous Steps:
{memory}
Decide the next step. Answer in this format:
Justification: <why this step>
Context: <what the tool needs to know>
Sub-Goal: <what the tool should do now>
Tool Name: <one of the available tools>"""

EXECUTOR_PROMPT = """Game of 24 with the numbers {numbers}.
Context: {context}
Sub-Goal: {sub_goal}
Write the one arithmetic expression for {tool}: numbers, + - * / and parentheses only. Answer with the expression
alone on one line."""

GENERATOR_PROMPT = """Game of 24 with the numbers {numbers}: use each number exactly once with + - * / and
parentheses to make 24.
Steps so far:
{memory}
Give the final answer on one line as: Answer: <expression>"""

_FIELD = r"\**{name}:\**\s*(.+?)\s*(?=\n\s*\**[A-Z][A-Za-z -]*:\**|\Z)"
_TOOL_NAME = re.compile(r"Tool Name:\s*\**\s*([^\n*]+)")
_ARITHMETIC = re.compile(r"[0-9()+\-*/ ]+")


class NotArithmetic(ValueError):
    """The text is not an expression of numbers, + - * / and parentheses (or it divides by zero)."""


# --- the tool and the exact check ---------------------------------------------------------------------------------


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """The exact value of `expression` and the numbers it uses; raises `NotArithmetic` for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise NotArithmetic(f"not an expression: {expression!r}") from exc
    numbers: list[int] = []
    return _value(tree.body, numbers), numbers


def _value(node: ast.expr, numbers: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left, numbers), _value(node.right, numbers)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise NotArithmetic("division by zero")
            return left / right
    raise NotArithmetic(f"only whole numbers, + - * / and parentheses are allowed, not {ast.unparse(node)!r}")


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    why: str


def check_24(puzzle: Sequence[int], expression: str | None) -> Check:
    """Exact: the expression uses each puzzle number exactly once and its value is 24."""
    if not expression:
        return Check(False, "no expression")
    try:
        value, used = evaluate(expression)
    except NotArithmetic as exc:
        return Check(False, str(exc))
    if sorted(used) != sorted(puzzle):
        return Check(False, f"uses {sorted(used)}, not each of {sorted(puzzle)} once")
    if value != TARGET:
        return Check(False, f"equals {value}, not {TARGET}")
    return Check(True, f"= {TARGET}")


def find_expression(text: str) -> str | None:
    """The arithmetic expression in a model's answer: after `Answer:` if there is one, before any `=`, in code
    fences or not; the longest run of arithmetic characters that holds a digit."""
    body = text.replace("×", "*").replace("÷", "/").replace("−", "-")
    if "Answer:" in body:
        body = body.rsplit("Answer:", 1)[1]
    body = body.split("=", 1)[0]
    runs = [r.strip() for r in _ARITHMETIC.findall(body) if any(c.isdigit() for c in r)]
    return max(runs, key=len) if runs else None


# --- the planner's output -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    context: str
    sub_goal: str
    tool: str


def parse_plan(text: str) -> Plan | None:
    """AgentFlow's parse: the last `Context / Sub-Goal / Tool Name` in the answer; None when one is missing."""
    tools = _TOOL_NAME.findall(text)
    context = re.findall(_FIELD.format(name="Context"), text, re.S)
    sub_goal = re.findall(_FIELD.format(name="Sub-Goal"), text, re.S)
    if not (tools and context and sub_goal):
        return None
    return Plan(context[-1].strip(), sub_goal[-1].strip(), tools[-1].strip().strip("`'\""))


# --- the loop -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    role: str
    tier: str
    model: str
    rule: str
    escalated: str
    note: str


@dataclass(slots=True)
class Run:
    puzzle: list[int]
    session_id: str
    stored_session_id: str | None = None
    """The id the gateway stores the session under (`x-tiergate-session`, percent-encoded): with keys checked, it is
    `<key id>/<session_id>`."""
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    result: Check = Check(False, "not run")
    cost_usd: str | None = None


class Agent:
    def __init__(self, client: openai.OpenAI, model: str, max_steps: int, max_tokens: int) -> None:
        self.client = client
        self.model = model
        self.max_steps = max_steps
        self.max_tokens = max_tokens

    def solve(self, puzzle: list[int]) -> Run:
        run = Run(puzzle, f"agentflow-{uuid.uuid4().hex[:12]}")
        headers = {"X-Tiergate-Session": run.session_id, "X-Tiergate-Task": "24:" + " ".join(map(str, puzzle))}
        numbers = ", ".join(map(str, puzzle))
        memory: list[str] = []
        for number in range(1, self.max_steps + 1):
            plan_text = self._ask(run, headers, "planner", PLANNER_PROMPT, numbers=numbers, memory=_lines(memory))
            plan = parse_plan(plan_text)
            if plan is None or plan.tool != TOOL_NAME:
                run.steps[-1].note = "unusable plan"
                memory.append(f"Step {number}: the plan was unusable (no Context / Sub-Goal / known Tool Name).")
                continue
            run.steps[-1].note = f"Tool Name: {plan.tool}"
            command = self._ask(
                run, headers, "executor", EXECUTOR_PROMPT, numbers=numbers, context=plan.context, sub_goal=plan.sub_goal
            )
            expression = find_expression(command)
            check = check_24(puzzle, expression)
            run.steps[-1].note = f"{expression} -> {'correct' if check.ok else 'wrong: ' + check.why}"
            memory.append(f"Step {number}: {TOOL_NAME} evaluated {expression}; check: {check.why}.")
            if check.ok:
                break
        final = self._ask(run, headers, "generator", GENERATOR_PROMPT, numbers=numbers, memory=_lines(memory))
        run.answer = find_expression(final)
        run.result = check_24(puzzle, run.answer)
        run.steps[-1].note = f"Answer: {run.answer}"
        return run

    def _ask(self, run: Run, headers: dict[str, str], role: str, template: str, **values: str) -> str:
        prompt = template.format(tool=TOOL_NAME, **values)
        raw = self.client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=self.max_tokens,
            temperature=0,
            extra_headers=headers,
        )
        completion = raw.parse()
        h = raw.headers
        run.stored_session_id = h.get("x-tiergate-session", run.stored_session_id)
        run.steps.append(
            Step(
                role,
                h.get("x-tiergate-tier", "?"),
                h.get("x-tiergate-model", "?"),
                h.get("x-tiergate-rule", "?"),
                h.get("x-tiergate-escalated", "no"),
                "",
            )
        )
        return completion.choices[0].message.content or ""


def _lines(memory: list[str]) -> str:
    return "\n".join(memory) or "(none yet)"


# --- talking to the gateway beyond chat ---------------------------------------------------------------------------


class Ledger:
    """Feedback and the ledger's view of a session, over plain HTTP with the same key."""

    def __init__(self, base_url: str, api_key: str) -> None:
        root = base_url.rstrip("/").removesuffix("/v1")
        self.http = httpx.Client(base_url=root, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)

    def send_outcome(self, run: Run) -> None:
        stored = unquote(run.stored_session_id) if run.stored_session_id else run.session_id
        body = {"session_id": stored, "metric": "success", "value": run.result.ok}
        self.http.post("/v1/feedback", json=body).raise_for_status()

    def session_cost(self, run: Run, wait_s: float = 10.0) -> str | None:
        """The session's spend once the ledger holds all of its steps (rows are written in batches), or None
        when the key may not read it."""
        deadline = time.monotonic() + wait_s
        while True:
            response = self.http.get(f"/dashboard/sessions/{run.stored_session_id or run.session_id}")
            if response.status_code in (401, 403):
                return None
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                if len(data["steps"]) >= len(run.steps) or time.monotonic() > deadline:
                    return str(data["spend_usd"])
            elif response.status_code != 404 or time.monotonic() > deadline:
                response.raise_for_status()
            time.sleep(0.1)

    def report_total(self) -> dict[str, Any] | None:
        response = self.http.get("/v1/reports/cost")
        if response.status_code in (401, 403):
            return None
        response.raise_for_status()
        total: dict[str, Any] = response.json()["total"]
        return total


def print_run(run: Run) -> None:
    print(f"puzzle {run.puzzle}  session {run.session_id}")
    for number, step in enumerate(run.steps, start=1):
        escalated = "" if step.escalated == "no" else f"  escalated={step.escalated}"
        print(f"  step {number} {step.role:<9} tier={step.tier:<8} rule={step.rule}{escalated}  {step.note}")
    cost = f"${run.cost_usd}" if run.cost_usd is not None else "n/a (reading the ledger needs an admin key)"
    print(f"  cost {cost}")
    verdict = "solved" if run.result.ok else "not solved"
    print(f"  result {verdict}: {run.answer or '(no expression)'} ({run.result.why})")


def parse_puzzle(text: str) -> list[int]:
    numbers = [int(n) for n in re.split(r"[\s,]+", text.strip(" []")) if n]
    if len(numbers) != 4:
        raise argparse.ArgumentTypeError(f"a puzzle is four whole numbers, not {text!r}")
    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base-url", default=os.environ.get("TIERGATE_BASE_URL", "http://127.0.0.1:8080/v1"))
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TIERGATE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none",
        help="the gateway's key (default: TIERGATE_API_KEY, else OPENAI_API_KEY)",
    )
    parser.add_argument("--model", default="auto", help="model for every LLM step (default: auto, the router decides)")
    parser.add_argument("--puzzles", nargs="+", type=parse_puzzle, default=[[1, 1, 1, 13], [4, 7, 8, 8]])
    parser.add_argument("--max-steps", type=int, default=3, help="planner/executor rounds per puzzle")
    parser.add_argument("--max-tokens", type=int, default=256, help="completion budget of each LLM call")
    args = parser.parse_args(argv)

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=1, timeout=300)
    agent = Agent(client, args.model, args.max_steps, args.max_tokens)
    ledger = Ledger(args.base_url, args.api_key)
    solved = 0
    for puzzle in args.puzzles:
        run = agent.solve(puzzle)
        ledger.send_outcome(run)
        run.cost_usd = ledger.session_cost(run)
        solved += run.result.ok
        print_run(run)
    total = ledger.report_total()
    print(f"solved {solved} of {len(args.puzzles)}")
    if total is not None:
        per_success = total["spend_per_success_usd"]
        print(
            f"ledger: {total['requests']} requests, {total['successes']} successes, spend ${total['spend_usd']}, "
            f"per success {'$' + per_success if per_success is not None else 'n/a'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
