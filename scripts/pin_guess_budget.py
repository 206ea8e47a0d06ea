"""The most PINs an attacker can have checked, per day and in total, from the guard's settings.

    python scripts/pin_guess_budget.py [--out reports/attacks]

Reads the PIN budget from Settings (PURCHASE_GUARD_PIN_FREE_FAILURES, ..._PIN_DISABLE_AFTER, or
the defaults), assumes an attacker who answers the moment each pause ends and never says the
right PIN, and counts with limits.pin_budget.most_guesses, the function the guard's pauses come
from. Also gives the chance that many guesses find a 4-digit PIN the guard accepts (the weak ones
are refused at SetPin, so the attacker picks from the rest, best case for them: no repeats).
Prints the JSON and writes it to --out/pin-budget.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

from purchase_guard.challenge.pin import is_weak_pin
from purchase_guard.config import Settings
from purchase_guard.limits import PinBudget, most_guesses


def budget_figures(settings: Settings) -> dict[str, object]:
    budget = PinBudget(free_failures=settings.pin_free_failures, disable_after=settings.pin_disable_after)
    per_day = most_guesses(budget, timedelta(days=1))
    days_to_disable, checked = 0, 0
    while checked < budget.disable_after:
        days_to_disable += 1
        checked = most_guesses(budget, timedelta(days=days_to_disable))
    allowed_4 = sum(1 for n in range(10_000) if not is_weak_pin(f"{n:04d}"))
    total = budget.disable_after
    return {
        "settings": {
            "pin_free_failures": budget.free_failures,
            "pin_disable_after": budget.disable_after,
            "first_delay_s": budget.first_delay.total_seconds(),
            "max_delay_s": budget.max_delay.total_seconds(),
            "max_attempts_per_challenge": settings.max_attempts,
        },
        "most_guesses_first_hour": most_guesses(budget, timedelta(hours=1)),
        "most_guesses_per_day": per_day,
        "most_guesses_in_total": total,
        "days_until_disabled": days_to_disable,
        "allowed_4_digit_pins": allowed_4,
        "chance_per_day_4_digit": round(per_day / allowed_4, 5),
        "chance_in_total_4_digit": round(total / allowed_4, 5),
        "note": (
            "in total = until the PIN is disabled and a parent sets it again; a right PIN resets "
            "the count, so each right answer by the family gives an attacker the daily figure again"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/attacks"))
    args = parser.parse_args()
    figures = budget_figures(Settings().validated())
    text = json.dumps(figures, indent=2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pin-budget.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
