"""The policy a household gets before a parent has set one.

Chosen to be safe for a family that never opens the settings: adults keep a smooth experience for
everyday orders, nobody else can spend without a parent saying yes, and guests (visitors, a voice
on the TV) cannot spend at all.
"""

from __future__ import annotations

from purchase_guard.domain import ChallengeMethod, LimitAction, Policy, PurchaseMode, Role, RoleRule

# Categories a child must never buy even with approval granted by a tired parent tapping "yes";
# the first four are age-restricted by law in most markets, gift cards are the classic vector for
# scams and for turning a parent's card into untraceable credit.
CHILD_BLOCKED_CATEGORIES = frozenset(
    {"alcohol", "tobacco", "vaping", "adult", "gambling", "gift-cards", "weapons"}
)
# Teens are under the legal age for these almost everywhere; gift cards stay possible with approval.
TEEN_BLOCKED_CATEGORIES = frozenset({"alcohol", "tobacco", "vaping", "adult", "gambling", "weapons"})


def default_policy() -> Policy:
    """A fresh copy of the default policy (revision 0: not yet stored)."""
    return Policy(
        rules=(
            # Adults buy outright up to everyday amounts; past a limit the order is not refused but
            # needs the spoken PIN, because the limit exists to catch a voice that only sounds like
            # an adult, not to stop a real adult from buying a sofa.
            RoleRule(
                role=Role.ADULT,
                mode=PurchaseMode.ALLOWED,
                max_order_minor=10_000,
                daily_cap_minor=30_000,
                monthly_cap_minor=100_000,
                on_limit=LimitAction.CHALLENGE,
                challenge_method=ChallengeMethod.SPOKEN_PIN,
            ),
            # Teens and children always need a parent's approval (a PIN could be overheard and
            # reused); above their maximum even approval is not offered, so a large order has to be
            # placed by the parent themselves.
            RoleRule(
                role=Role.TEEN,
                mode=PurchaseMode.WITH_CHALLENGE,
                max_order_minor=5_000,
                on_limit=LimitAction.DENY,
                challenge_method=ChallengeMethod.PARENT_APPROVAL,
                blocked_categories=TEEN_BLOCKED_CATEGORIES,
            ),
            RoleRule(
                role=Role.CHILD,
                mode=PurchaseMode.WITH_CHALLENGE,
                max_order_minor=3_000,
                on_limit=LimitAction.DENY,
                challenge_method=ChallengeMethod.PARENT_APPROVAL,
                blocked_categories=CHILD_BLOCKED_CATEGORIES,
            ),
            # Spelled out rather than left without a rule (which denies too) so a parent reading
            # the policy sees the decision instead of having to know the default.
            RoleRule(role=Role.GUEST, mode=PurchaseMode.NEVER),
        ),
        # No household-wide blocks, caps, quiet hours or low-value exemption: each is a family
        # choice, and the per-role rules above already cover the risky cases. The exemption in
        # particular is off because it lets small child orders through without a parent.
        blocked_categories=frozenset(),
        quiet_hours=None,
        low_value_exemption=None,
    )
