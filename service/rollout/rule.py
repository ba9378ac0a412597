"""The rule that promotes or rolls back a canary, and the completion of a promotion.

**Judging.** A canary with ``promote_after`` is judged once it has that many feedback labels
of its trial (given for it since it became the canary, while the current stable was stable).
Its accuracy on them is compared with stable's accuracy **on the same rows** (stable's
predictions of those rows are computed when the feedback arrives): it is promoted when its
accuracy is at least stable's minus ``max_accuracy_drop``, and rolled back otherwise, in
exact fractions. Comparing on the same rows makes the comparison paired, so neither figure
depends on which rows happened to reach which version, and it never waits for stable's own
feedback.

**Deciding once.** The verdict is written as a plan change conditional on the plan's
revision: of several workers or replicas reaching it at once exactly one writes it (and its
history entry); the others find the revision moved and judge again from the new plan, where
the canary is gone. The feedback request whose labels complete the count decides; every
worker's flusher judges too, as the backstop for a decision that request could not write.

**Promoting.** The written decision names the canary as ``promoting``; its activation follows,
and once done the mark is cleared. A process that dies in between leaves the mark, and the
next flush of any worker or replica completes the activation. A version that can never be
activated (deleted, damaged) is recorded as ``promotion_failed`` and stable stays.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from model.errors import (
    CorruptModelError,
    InvalidVersionError,
    ModelNotFoundError,
    ModelStoreError,
)
from service.errors import public
from service.rollout.plan import Canary, Plan
from service.rollout.store import Paired, RolloutStore

if TYPE_CHECKING:
    from service.registry import Registry


class Follower(Protocol):
    """What routes by the plan (a worker's :class:`~service.rollout.traffic.Traffic`)."""

    def apply(self, plan: Plan) -> None: ...
    def reload(self) -> Plan: ...


log = logging.getLogger("iris.rollout")
ATTEMPTS = 3  # plan changes lost to another change (not a decision) before giving up


class Verdict(NamedTuple):
    event: str  # "promoted" or "rolled_back"
    reason: str
    figures: dict[str, Any]


def judge(canary: Canary, stable: str, paired: Paired) -> Verdict | None:
    """The rule for ``canary`` against ``stable`` given their paired feedback, or None
    while it has fewer than ``promote_after`` labels (or no rule)."""
    if canary.promote_after is None or paired.labels < canary.promote_after:
        return None
    accuracy = Fraction(paired.correct, paired.labels)
    baseline = Fraction(paired.stable_correct, paired.labels)
    drop = Fraction(repr(canary.max_accuracy_drop))  # the decimal as written: 0.02 exactly
    figures = {
        "canary": canary.version,
        "stable": stable,
        "labels": paired.labels,
        "canary_correct": paired.correct,
        "stable_correct": paired.stable_correct,
        "canary_accuracy": float(accuracy),
        "stable_accuracy": float(baseline),
        "max_accuracy_drop": canary.max_accuracy_drop,
        "promote_after": canary.promote_after,
    }
    comparison = (
        f"on {paired.labels} labelled rows the canary was right on {paired.correct} "
        f"({float(accuracy):.4f}) and stable on {paired.stable_correct} "
        f"({float(baseline):.4f}); the most it may lose is {canary.max_accuracy_drop:g}"
    )
    if accuracy >= baseline - drop:
        return Verdict("promoted", f"promoted by the rule: {comparison}", figures)
    return Verdict("rolled_back", f"rolled back by the rule: {comparison}", figures)


def decide(
    store: RolloutStore, registry: Registry, traffic: Follower, canary_version: str | None = None
) -> dict[str, Any] | None:
    """Judge the canary (only if it is ``canary_version``, when given) and write its verdict
    once; carry out a promotion. Returns the decision this call wrote, or None."""
    stable = registry.get().version
    for _ in range(ATTEMPTS):
        plan = store.plan()
        canary = plan.canary
        if canary is None or canary.promote_after is None:
            return None
        if canary_version is not None and canary.version != canary_version:
            return None
        verdict = judge(canary, stable, store.paired(canary.version, stable))
        if verdict is None:
            return None
        promoted = verdict.event == "promoted"
        shadow = plan.shadow
        if promoted and shadow is not None and shadow.version == canary.version:
            shadow = None
        changed = store.change_plan(
            None,
            shadow,
            revision=plan.revision,
            stable=canary.version if promoted else stable,
            event=verdict.event,
            reason=verdict.reason,
            figures=verdict.figures,
            promoting=canary.version if promoted else plan.promoting,
        )
        if changed is None:
            continue  # another change came first: judge again from the plan it left
        traffic.apply(changed)
        log.warning("canary %s %s", canary.version, verdict.reason)
        decision = {"event": verdict.event, "reason": verdict.reason, "figures": verdict.figures}
        if promoted:
            try:
                failure = complete_promotion(store, registry, traffic)
            except ModelStoreError as error:  # unavailable: the next flush completes it
                log.warning("activating the promoted canary %s: %s; retried", canary.version,
                            error)  # fmt: skip
                return decision
            if failure is not None:
                return failure | {"figures": verdict.figures}
        return decision
    return None


def complete_promotion(
    store: RolloutStore, registry: Registry, traffic: Follower
) -> dict[str, Any] | None:
    """Activate the promoted canary the plan marks, if any, and clear the mark. Returns the
    failure when it can never be activated; a store that is unavailable leaves the mark for
    the next try (the error is raised)."""
    plan = store.plan()
    version = plan.promoting
    if version is None:
        return None
    models = registry.store
    stable = registry.active.version if registry.active else None
    try:
        if models.current() != version:
            models.activate(version)
        registry.refresh()
    except (ModelNotFoundError, InvalidVersionError, CorruptModelError) as error:
        reason = (
            f"the canary {version} was promoted but cannot be activated: "
            f"{public(str(error))}; stable is still {stable}"
        )
        if store.promoted(version):
            store.record("promotion_failed", reason, stable or "")
            log.error("%s", reason)
        return {"event": "promotion_failed", "reason": reason}
    store.promoted(version)
    traffic.reload()
    return None
