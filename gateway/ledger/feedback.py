"""Feedback: an outcome for one request or a whole session, on a metric declared in the config.

The latest feedback on a metric wins. A session's outcome applies to every step of the session, including steps
recorded after it arrived; a request's own feedback wins over its session's (see `gateway.ledger.report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, ValidationError
from sqlalchemy import Engine, insert, select

from gateway.auth.keys import scoped_session_id
from gateway.ledger.database import call_db
from gateway.ledger.models import OutcomeRow, RequestRow, SessionRow
from gateway.ledger.record import utc_now
from gateway.ledger.settings import MetricSettings
from gateway.ledger.writer import Ledger
from router.errors import InvalidRequest


class FeedbackIn(BaseModel):
    """The body of `POST /v1/feedback`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str | None = None
    session_id: str | None = None
    metric: str
    value: StrictBool | StrictInt | StrictFloat


async def submit_feedback(
    ledger: Ledger, payload: Mapping[str, Any], *, session_scope: str | None = None
) -> dict[str, Any]:
    """Store one outcome. `payload` is the parsed JSON body: `{request_id | session_id, metric, value}`. With
    `session_scope` (a client key's id) a session id names that key's own session, stored as `<scope>/<id>` (an id
    that starts with `<scope>/` already is that stored id).

    Raises `InvalidRequest` for a bad body, an undeclared metric, a value of the wrong type or an unknown id
    (code `not_found`), and `Unavailable` while the database is unreachable. Returns the stored outcome."""
    feedback = parse_feedback(payload, ledger.settings.metrics)
    own = f"{session_scope}/"
    if session_scope is not None and feedback.session_id is not None and not feedback.session_id.startswith(own):
        # The id as the key sent it; an id already under the key's own scope (the `x-tiergate-session` answer
        # header) is taken as it is: either way nothing outside `<key id>/` can be reached.
        feedback = feedback.model_copy(update={"session_id": scoped_session_id(session_scope, feedback.session_id)})
    if not await call_db(_target_exists, ledger.engine, feedback):
        await ledger.flush()  # the request may have just finished, its row still on its way
        if not await call_db(_target_exists, ledger.engine, feedback):
            param = "request_id" if feedback.request_id is not None else "session_id"
            raise InvalidRequest(
                f"no {param.removesuffix('_id')} with id {getattr(feedback, param)!r}", param=param, code="not_found"
            )
    value = float(feedback.value)
    outcome_id, created_at = await call_db(_insert_outcome, ledger.engine, feedback, value)
    return {
        "id": outcome_id,
        "request_id": feedback.request_id,
        "session_id": feedback.session_id,
        "metric": feedback.metric,
        "value": feedback.value,
        "created_at": created_at.isoformat(),
    }


def parse_feedback(payload: Mapping[str, Any], metrics: Mapping[str, MetricSettings]) -> FeedbackIn:
    try:
        feedback = FeedbackIn.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = str(error["loc"][0]) if error["loc"] else None
        message = "must be true, false or a number" if param == "value" else error["msg"]
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param) from None
    if (feedback.request_id is None) == (feedback.session_id is None):
        raise InvalidRequest("give exactly one of request_id and session_id", param="request_id")
    spec = metrics.get(feedback.metric)
    if spec is None:
        raise InvalidRequest(
            f"metric {feedback.metric!r} is not declared; declared: {', '.join(sorted(metrics))}", param="metric"
        )
    if spec.type == "boolean" and not isinstance(feedback.value, bool):
        raise InvalidRequest(f"metric {feedback.metric!r} is boolean: value must be true or false", param="value")
    if spec.type == "float" and (isinstance(feedback.value, bool) or not math.isfinite(feedback.value)):
        raise InvalidRequest(f"metric {feedback.metric!r} is a number: value must be a finite number", param="value")
    return feedback


def _target_exists(engine: Engine, feedback: FeedbackIn) -> bool:
    if feedback.request_id is not None:
        query = select(RequestRow.id).where(RequestRow.id == feedback.request_id)
    else:
        query = select(SessionRow.id).where(SessionRow.id == feedback.session_id)
    with engine.connect() as connection:
        return connection.execute(query).first() is not None


def _insert_outcome(engine: Engine, feedback: FeedbackIn, value: float) -> tuple[int, datetime]:
    created_at = utc_now()
    stmt = (
        insert(OutcomeRow)
        .values(
            request_id=feedback.request_id,
            session_id=feedback.session_id,
            metric=feedback.metric,
            value=value,
            created_at=created_at,
        )
        .returning(OutcomeRow.id)
    )
    with engine.begin() as connection:
        outcome_id: int = connection.execute(stmt).scalar_one()
    return outcome_id, created_at
