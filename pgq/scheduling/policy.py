"""Claim rules per queue: concurrency and rate limits, per-group rules, fair share, aging.

A queue's policy is its row in ``pgq.queue_policies`` (``set_queue_policy``);
the claim functions obey it in Postgres (``lock_policy_jobs``,
``lock_group_jobs``; their comments define each rule), so it holds for every
worker on every host, in both modes, and for claims made from plain SQL. This
module validates a policy, sends the calls and reads ``queue_policy_usage``.

- ``max_running``: at most this many of the queue's jobs running at once.
- ``rate_limit`` per ``rate_period`` seconds: a token bucket (burst ``rate_limit``).
- ``group_max_running``, ``group_rate_limit`` per ``group_rate_period``: the same
  for each group (``jobs.group_key``: a tenant, a customer) on its own.
- ``fair_share``: weighted fair share between the groups with runnable jobs
  (``set_group_weight``; default weight 1).
- ``aging_step`` seconds: a job gains one priority band per step waited past
  its ``run_at``, up to 5 (the maintenance leader runs ``age_jobs``).

A queue with a policy is claimed from Postgres only, also when workers use the
Redis accelerator (Redis cannot weigh a claim against the rules).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any

from pgq.errors import ValidationError
from pgq.job import validate_queue_name
from pgq.queries import PolicyQueries

MAX_LIMIT = 1_000_000
MAX_PERIOD_SECONDS = 86_400.0
MAX_AGING_STEP_SECONDS = 30 * 86_400.0
MAX_WEIGHT = 1_000_000.0


@dataclass(frozen=True)
class QueuePolicy:
    """A queue's claim rules, validated (``QueuePolicy.build``); None / False: the rule is off."""

    queue: str
    max_running: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    group_max_running: int | None = None
    group_rate_limit: int | None = None
    group_rate_period: float | None = None
    fair_share: bool = False
    aging_step: float | None = None

    @classmethod
    def build(cls, queue: str, *, max_running: int | None = None, rate_limit: int | None = None,
              rate_period: float | dt.timedelta | None = None, group_max_running: int | None = None,
              group_rate_limit: int | None = None, group_rate_period: float | dt.timedelta | None = None,
              fair_share: bool = False, aging_step: float | dt.timedelta | None = None) -> QueuePolicy:
        """Check every rule; raise ``ValidationError`` naming the first bad one."""
        validate_queue_name(queue)
        if not isinstance(fair_share, bool):
            raise ValidationError(f"fair_share must be True or False, got {fair_share!r}")
        policy = cls(
            queue, _count("max_running", max_running), _count("rate_limit", rate_limit),
            _seconds("rate_period", rate_period, MAX_PERIOD_SECONDS),
            _count("group_max_running", group_max_running), _count("group_rate_limit", group_rate_limit),
            _seconds("group_rate_period", group_rate_period, MAX_PERIOD_SECONDS), fair_share,
            _seconds("aging_step", aging_step, MAX_AGING_STEP_SECONDS))
        for limit, period in (("rate_limit", "rate_period"), ("group_rate_limit", "group_rate_period")):
            if (getattr(policy, limit) is None) != (getattr(policy, period) is None):
                raise ValidationError(f"give {limit} and {period} together (at most {limit} claims per {period} seconds)")
        if policy == cls(queue):
            raise ValidationError(f"give at least one rule for queue {queue!r} (clear_queue_policy removes a policy)")
        return policy

    def values(self) -> list[Any]:
        """The arguments of ``set_queue_policy``, in order."""
        return [self.queue, self.max_running, self.rate_limit, self.rate_period, self.group_max_running,
                self.group_rate_limit, self.group_rate_period, self.fair_share, self.aging_step]


@dataclass(frozen=True)
class PolicyUsage:
    """A queue's policy and its use now (``pgq.queue_policy_usage``); periods in seconds."""

    queue: str
    max_running: int | None
    running: int
    rate_limit: int | None
    rate_period: float | None
    tokens: float | None
    group_max_running: int | None
    group_rate_limit: int | None
    group_rate_period: float | None
    fair_share: bool
    aging_step: float | None
    runnable: int
    groups_with_state: int
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["updated_at"] = self.updated_at.isoformat()
        return out


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationError(f"{name} must be a whole number from 1 to {MAX_LIMIT:,}, got {value!r}")
    return value


def _seconds(name: str, value: object, most: float) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0.001 <= seconds <= most:
        raise ValidationError(f"{name} must be a number of seconds from 0.001 to {most:.0f}, got {value!r}")
    return float(seconds)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def set_policy(conn: Any, schema: str, policy: QueuePolicy) -> None:
    """Store ``policy`` (``pgq.set_queue_policy``), replacing the queue's previous rules."""
    PolicyQueries(schema).store(conn, policy.values())


def clear_policy(conn: Any, schema: str, queue: str) -> bool:
    """Remove a queue's rules and its groups' weights (``pgq.clear_queue_policy``); False if it had none."""
    return PolicyQueries(schema).clear(conn, validate_queue_name(queue))


def set_group_weight(conn: Any, schema: str, queue: str, group_key: str, weight: float) -> None:
    """A group's weight in its queue's fair share (``pgq.set_group_weight``); the queue must have a policy.
    ``group_key`` '' is the group of jobs without one."""
    validate_queue_name(queue)
    if not isinstance(group_key, str) or len(group_key) > 200 or "\x00" in group_key:
        raise ValidationError(f"group_key must be a string of at most 200 characters, got {group_key!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 < weight <= MAX_WEIGHT:
        raise ValidationError(f"weight must be a number above 0 and at most {MAX_WEIGHT:,.0f}, got {weight!r}")
    PolicyQueries(schema).set_weight(conn, queue, group_key, float(weight))


def policies(conn: Any, schema: str) -> list[PolicyUsage]:
    """Every queue with a policy, with its use now, by queue name."""
    return [PolicyUsage(str(r[0]), r[1], int(r[2]), r[3], _float(r[4]), _float(r[5]), r[6], r[7], _float(r[8]),
                        bool(r[9]), _float(r[10]), int(r[11]), int(r[12]), r[13])
            for r in PolicyQueries(schema).usage(conn)]
