"""The rollout's decisions: the routing set by hand, feedback and the rule it triggers, the
monitoring figures. The HTTP routes (service/routers/rollout.py) validate and call these.

**The rule.** A canary with ``promote_after`` is judged once it has that many feedback
labels given while the current stable was stable. Its accuracy on them is compared with
stable's accuracy **on the same rows** (stable's predictions of those rows are computed when
the feedback arrives): the canary is promoted (activated, canary cleared) when its accuracy
is at least stable's minus ``max_accuracy_drop``, and rolled back (canary cleared) otherwise.
Comparing on the same rows makes the comparison paired, so neither version's figure depends
on which rows happened to reach it, and it never waits for stable's own feedback.

The decision is taken by the request whose feedback completed the count, within that
request, as a plan change conditional on the plan's revision: of several workers or replicas
reaching it at once exactly one writes it (and its history entry); the others find the
revision moved and do nothing. The activation of a promoted canary follows the committed
decision; if it fails, the history says so (``promotion_failed``) and stable is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from model.data import CLASSES
from model.errors import ModelStoreError
from model.network import FloatArray, IntArray
from service.errors import ProblemError
from service.rollout.plan import Canary, Plan, Shadow
from service.rollout.store import Counts, Paired
from service.rollout.traffic import classes_of

if TYPE_CHECKING:
    from service.deps import State

log = logging.getLogger("iris.rollout")


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


def stable_version(st: State) -> str:
    """The active version (the registry raises NotReadyError while there is none)."""
    return st.registry.get().version


# -- routing set by hand --------------------------------------------------------------------


def set_routing(
    st: State, canary: Canary | None, shadow: Shadow | None, revision: int | None
) -> Plan:
    """PUT /routing: check the versions, then change the plan (conditional on ``revision``
    when given: a 409 if it moved)."""
    stable = stable_version(st)
    for role, part in (("canary", canary), ("shadow", shadow)):
        if part is None:
            continue
        if part.version == stable:
            raise ProblemError(
                422, f"{role}.version: {part.version} is the stable version (the one served)"
            )
        try:
            st.registry.get(part.version)
        except ModelStoreError as error:
            raise ProblemError(422, f"{role}.version: {error}") from None
    current = st.rollout.plan()
    if revision is not None and revision != current.revision:
        raise ProblemError(409, stale(revision, current.revision))
    reason = "set by PUT /routing" if canary or shadow else "cleared by PUT /routing"
    plan = st.rollout.change_plan(
        canary, shadow, revision=current.revision, event="routing_changed", reason=reason
    )
    if plan is None:
        raise ProblemError(409, stale(current.revision, st.rollout.plan().revision))
    st.traffic.apply(plan)
    return plan


def stale(expected: int, found: int) -> str:
    return (
        f"the routing changed meanwhile (revision {found}, not {expected}): "
        "read it again with GET /routing"
    )


def activated(st: State, version: str) -> None:
    """After a version was activated by hand: a canary or shadow of it is cleared (it is
    stable now), with the reason in the history."""
    plan = st.rollout.plan()
    role = plan.names(version)
    if role is None:
        return
    canary = None if role == "canary" else plan.canary
    shadow = None if plan.shadow is not None and plan.shadow.version == version else plan.shadow
    changed = st.rollout.change_plan(
        canary,
        shadow,
        revision=plan.revision,
        event="routing_changed",
        reason=f"{role} {version} activated by hand: it is stable now",
    )
    if changed is not None:
        st.traffic.apply(changed)


def routed(st: State, version: str) -> str | None:
    """What the routing makes of ``version`` (a deletion's 409), from the store."""
    return st.rollout.plan().names(version)


# -- feedback and the rule ------------------------------------------------------------------


def labels_of(labels: Sequence[str | int]) -> IntArray:
    return np.array(
        [CLASSES.index(label) if isinstance(label, str) else label for label in labels],
        dtype=np.int64,
    )


def feedback(st: State, version: str, rows: FloatArray, y: IntArray) -> dict[str, Any]:
    """POST /feedback: count the labels for ``version`` (whose predictions of the rows are
    computed again, so a label is judged against what the version answers), pair them with
    stable's predictions of the same rows when ``version`` is not stable, then apply the
    rule. Returns what was counted and the decision, if this feedback made one."""
    try:
        stored = st.registry.get(version)
    except ModelStoreError as error:
        raise ProblemError(422, f"model_version: {error}") from None
    correct = int(np.count_nonzero(classes_of(stored, rows) == y))
    stable = st.registry.get()
    paired = None
    if stable.version != version:
        paired = (stable.version, int(np.count_nonzero(classes_of(stable, rows) == y)))
    st.rollout.add_feedback(version, len(y), correct, paired)
    decision = apply_rule(st, stable.version)
    return {
        "model_version": version,
        "count": len(y),
        "correct": correct,
        "decision": decision,
    }


def apply_rule(st: State, stable: str) -> dict[str, Any] | None:
    """Judge the canary if the rule applies; write and carry out the verdict once."""
    plan = st.rollout.plan()
    canary = plan.canary
    if canary is None or canary.promote_after is None:
        return None
    verdict = judge(canary, stable, st.rollout.paired(canary.version, stable))
    if verdict is None:
        return None
    shadow = plan.shadow
    if verdict.event == "promoted" and shadow is not None and shadow.version == canary.version:
        shadow = None
    changed = st.rollout.change_plan(
        None,
        shadow,
        revision=plan.revision,
        event=verdict.event,
        reason=verdict.reason,
        figures=verdict.figures,
    )
    if changed is None:
        return None  # another worker or replica decided first
    st.traffic.apply(changed)
    log.warning("canary %s %s", canary.version, verdict.reason)
    if verdict.event == "promoted":
        try:
            st.store.activate(canary.version)
            st.registry.refresh()
        except ModelStoreError as error:
            st.rollout.record(
                "promotion_failed",
                f"the canary {canary.version} was promoted but could not be activated: "
                f"{error}; stable is still {stable}",
                verdict.figures,
            )
            log.error("promoting %s failed: %s", canary.version, error)
            return {"event": "promotion_failed", "reason": str(error)}
    return {"event": verdict.event, "reason": verdict.reason, "figures": verdict.figures}


# -- the figures ----------------------------------------------------------------------------


def monitoring(st: State) -> dict[str, Any]:
    """GET /monitoring: every stored version's counts, and the drift of recent inputs."""
    stable = stable_version(st)
    plan = st.rollout.plan()
    counts = st.rollout.counts()
    stored = set(st.store.versions())
    named = {stable, *plan.versions()}
    versions = {}
    for version in sorted((counts.keys() & stored) | named):
        c = counts.get(version)
        served = c.served if c else 0
        labels = c.feedback if c else 0
        role = "stable" if version == stable else plan.names(version)
        versions[version] = {
            "role": role,
            "served": served,
            "feedback": {
                "count": labels,
                "correct": c.correct if c else 0,
                "accuracy": c.correct / labels if c and labels else None,
            },
            "shadow": shadow_figures(c) if (c and c.shadowed) or role == "shadow" else None,
        }
    return {"versions": versions, "drift": st.traffic.drift()}


def shadow_figures(c: Counts | None) -> dict[str, Any]:
    """Rows a version computed in shadow, and the fraction whose class agreed with stable's."""
    shadowed, agreed = (c.shadowed, c.agreed) if c else (0, 0)
    return {
        "count": shadowed,
        "agreed": agreed,
        "agreement": agreed / shadowed if shadowed else None,
    }
