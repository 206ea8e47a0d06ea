"""Parental-control model: a validated policy and a pure engine that turns it into a verdict."""

from purchase_guard.money import format_money
from purchase_guard.policy.defaults import default_policy
from purchase_guard.policy.engine import PolicyVerdict, evaluate_policy
from purchase_guard.policy.validate import validate_policy

__all__ = ["PolicyVerdict", "default_policy", "evaluate_policy", "format_money", "validate_policy"]
