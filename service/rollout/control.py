"""The rollout's requests: the routing set by hand, feedback (and the rule it triggers, in
service/rollout/rule.py), the monitoring figures, and what activations and deletions owe the
routing. The HTTP routes (service/routers/rollout.py, service/routers/models.py) validate
the bodies and call these.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.data import CLASSES
from model.errors import InvalidVersionError, ModelNotFoundError, ModelStoreError
from model.network import FloatArray, IntArray
from model.persistence import StoredModel
from service.errors import ProblemError
from service.rollout import rule
from service.rollout.plan import Canary, Shadow
from service.rollout.store import Counts, Paired
from service.rollout.traffic import classes_of

if TYPE_CHECKING:
    from service.deps import State

log = logging.getLogger("iris.rollout")
NOT_STORED = (ModelNotFoundError, InvalidVersionError)


def stable_version(st: State) -> str:
    """The active version (the registry raises NotReadyError while there is none)."""
    return st.registry.get().version


def stored(st: State, field: str, version: str) -> StoredModel:
    """A version a body names, loaded from the store (never the cache: another replica may
    have deleted it); a 422 naming ``field`` when it is not stored."""
    try:
        return st.store.load(version)
    except NOT_STORED as error:
        raise ProblemError(422, f"{field}: {error}") from None


# -- routing set by hand --------------------------------------------------------------------


def set_routing(
    st: State, canary: Canary | None, shadow: Shadow | None, revision: int | None
) -> dict[str, Any]:
    """PUT /routing: check the versions, then change the plan (conditional on ``revision``
    when given: a 409 if it moved). A canary other than the current one starts a new trial
    (its feedback against stable is counted from nothing)."""
    stable = stable_version(st)
    for role, part in (("canary", canary), ("shadow", shadow)):
        if part is None:
            continue
        if part.version == stable:
            raise ProblemError(
                422, f"{role}.version: {part.version} is the stable version (the one served)"
            )
        stored(st, f"{role}.version", part.version)
    current = st.rollout.plan()
    if revision is not None and revision != current.revision:
        raise ProblemError(409, stale(revision, current.revision))
    if current.promoting is not None:
        raise ProblemError(
            409, f"the canary {current.promoting} is being promoted: try again in a second"
        )
    new_trial = canary is not None and (
        current.canary is None or current.canary.version != canary.version
    )
    plan = st.rollout.change_plan(
        canary,
        shadow,
        revision=current.revision,
        stable=stable,
        event="routing_changed",
        reason=f"set by PUT /routing: {described(canary, shadow)}",
        new_trial=new_trial,
    )
    if plan is None:
        raise ProblemError(409, stale(current.revision, st.rollout.plan().revision))
    st.traffic.apply(plan)
    return plan.view(stable)


def described(canary: Canary | None, shadow: Shadow | None) -> str:
    """A plan in words, for the history."""
    parts = []
    if canary is not None:
        rule_ = (
            f", promoted or rolled back after {canary.promote_after} feedback labels "
            f"(max accuracy drop {canary.max_accuracy_drop:g})"
            if canary.promote_after is not None
            else ", no rule"
        )
        parts.append(f"canary {canary.version} at weight {canary.weight:g}{rule_}")
    if shadow is not None:
        parts.append(f"shadow {shadow.version}")
    return "; ".join(parts) or "no canary, no shadow"


def stale(expected: int, found: int) -> str:
    return (
        f"the routing changed meanwhile (revision {found}, not {expected}): "
        "read it again (GET /routing) and send the change made from it"
    )


def activated(st: State, version: str) -> None:
    """After a version was activated by hand: recorded in the history (stable changed); a
    canary or shadow of it is cleared, since it is stable now."""
    plan = st.rollout.plan()
    role = plan.names(version)
    reason = f"{version} activated by hand (POST /models/{version}/activate)"
    if role not in ("canary", "shadow"):
        st.rollout.record("activated", reason, version)
        return
    canary = None if role == "canary" else plan.canary
    shadow = None if role == "shadow" else plan.shadow
    changed = st.rollout.change_plan(
        canary,
        shadow,
        revision=plan.revision,
        stable=version,
        event="activated",
        reason=f"{reason}: the {role} is stable now",
        promoting=plan.promoting,
    )
    if changed is None:  # the plan moved meanwhile: the activation is recorded still
        st.rollout.record("activated", reason, version)
    else:
        st.traffic.apply(changed)


def routed(st: State, version: str) -> str | None:
    """What the routing makes of ``version`` (a deletion's 409), from the store."""
    return st.rollout.plan().names(version)


# -- feedback -------------------------------------------------------------------------------


def labels_of(labels: Sequence[str | int]) -> IntArray:
    return np.array(
        [CLASSES.index(label) if isinstance(label, str) else label for label in labels],
        dtype=np.int64,
    )


def feedback(st: State, version: str, rows: FloatArray, y: IntArray) -> dict[str, Any]:
    """POST /feedback: count the labels for ``version`` (whose predictions of the rows are
    computed again, so a label is judged against what the version answers), pair them with
    stable's predictions of the same rows when ``version`` is not stable, then judge the
    canary if this was its feedback. Returns what was counted and the decision, if this
    feedback made one.

    Once the labels are written the answer is a 200: were the rule's step to fail (the
    store gone meanwhile), a retry would count the labels twice; the flusher's backstop
    judges the canary instead."""
    try:
        model = st.registry.get(version)
    except NOT_STORED as error:
        raise ProblemError(422, f"model_version: {error}") from None
    correct = int(np.count_nonzero(classes_of(model, rows) == y))
    stable = st.registry.get()
    paired = None
    if stable.version != version:
        paired = (stable.version, int(np.count_nonzero(classes_of(stable, rows) == y)))
    with st.traffic.deciding:
        st.rollout.add_feedback(version, len(y), correct, paired)
        try:
            decision = rule.decide(st.rollout, st.registry, st.traffic, canary_version=version)
        except ModelStoreError as error:
            log.warning("feedback for %s counted; the rule is left to the flusher: %s",
                        version, error)  # fmt: skip
            decision = None
    return {"model_version": version, "count": len(y), "correct": correct, "decision": decision}


# -- the figures ----------------------------------------------------------------------------


def monitoring(st: State) -> dict[str, Any]:
    """GET /monitoring: every stored version's counts, and the drift of recent inputs."""
    stable = stable_version(st)
    plan = st.rollout.plan()
    counts = st.rollout.counts()
    stored_versions = set(st.store.versions())
    named = {stable, *plan.versions()}
    versions = {}
    for version in sorted((counts.keys() & stored_versions) | named):
        c = counts.get(version)
        role = "stable" if version == stable else plan.names(version)
        labels = c.feedback if c else 0
        figures: dict[str, Any] = {
            "role": role,
            "served": c.served if c else 0,
            "feedback": {
                "count": labels,
                "correct": c.correct if c else 0,
                "accuracy": c.correct / labels if c and labels else None,
            },
            "shadow": shadow_figures(c) if (c and c.shadowed) or role == "shadow" else None,
        }
        if role == "canary" and plan.canary is not None:
            figures["trial"] = trial_figures(st.rollout.paired(version, stable), plan.canary)
        versions[version] = figures
    return {"versions": versions, "drift": st.traffic.drift()}


def shadow_figures(c: Counts | None) -> dict[str, Any]:
    """Rows a version computed in shadow, and the fraction whose class agreed with stable's."""
    shadowed, agreed = (c.shadowed, c.agreed) if c else (0, 0)
    return {
        "count": shadowed,
        "agreed": agreed,
        "agreement": agreed / shadowed if shadowed else None,
    }


def trial_figures(paired: Paired, canary: Canary) -> dict[str, Any]:
    """The canary's trial: the labels the rule counts, and both versions' accuracy on them."""
    labels = paired.labels
    return {
        "labels": labels,
        "promote_after": canary.promote_after,
        "canary_accuracy": paired.correct / labels if labels else None,
        "stable_accuracy": paired.stable_correct / labels if labels else None,
    }
