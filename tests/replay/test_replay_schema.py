"""Scenario files are validated on load: a bad file names its path and the field at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from purchase_guard.replay.audio import AudioRenderer
from purchase_guard.replay.schema import (
    ScenarioError,
    discover,
    expand_keys,
    load_scenario,
    parse_duration,
)

GOOD: dict[str, Any] = {
    "name": "good",
    "household": {
        "key": "smiths",
        "pin": "7391",
        "members": [
            {
                "key": "george",
                "role": "ADULT",
                "parent": True,
                "enroll": [{"fsdd": {"speaker": "george", "digits": "1234", "take": 0}}] * 3,
            }
        ],
    },
    "orders": {"towels": {"items": [{"sku": "t1", "price": "20.00", "category": "household"}]}},
    "steps": [
        {
            "id": "ask",
            "evaluate": {"order": "towels", "audio": {"file": "voices/low.flac"}},
            "expect": {"outcome": "CHALLENGE", "reasons": ["AMOUNT_OVER_LIMIT"]},
        },
        {"wait": "2m"},
        {
            "confirm": {
                "digits": "${pin}",
                "challenge": "ask",
                "audio": {"fsdd": {"speaker": "george", "digits": "${pin}"}},
            },
            "expect": {"outcome": "ALLOW"},
        },
    ],
}


def write(folder: Path, name: str, doc: Any) -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def mutated(change: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    change(doc)
    return doc


def test_good_file_loads_into_values(tmp_path: Path, synth_root: Path) -> None:
    """A valid file gives households, orders in minor units, steps with their expectations."""
    path = write(tmp_path, "good.yaml", GOOD)
    scenario = load_scenario(path, AudioRenderer(synth_root))
    assert scenario.name == "good"
    assert [h.key for h in scenario.households] == ["smiths"]
    assert scenario.households[0].members[0].enroll[0].identity() == "fsdd/george"
    evaluate, wait, confirm = scenario.steps
    assert evaluate.order is not None
    assert evaluate.order.to_request("USD")["total"] == {"minor_units": "2000", "currency": "USD"}
    assert evaluate.expect.reasons == ("AMOUNT_OVER_LIMIT",)
    assert wait.wait_s == 120.0
    assert confirm.challenge == "ask"
    assert confirm.digits == "${pin}"
    assert scenario.requires == ("clock",)  # a 2 minute wait cannot be done in real time


def set_in(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


BAD_CASES = [
    ("steps.0.expcet", {"outcome": "ALLOW"}, "steps[0].expcet", "unknown field"),
    ("steps.0.expect.outcome", "ALOW", "steps[0].expect.outcome", "not one of"),
    ("steps.0.expect.reasons", ["AMOUNT_OVER_LIMT"], "steps[0].expect.reasons[0]", "not a known code"),
    (
        "steps.0.evaluate.audio",
        {"fsdd": {"speaker": "george", "digits": "12a4"}},
        "steps[0].evaluate.audio.fsdd.digits",
        "must be digits",
    ),
    (
        "steps.0.evaluate.audio",
        {"fsdd": {"speaker": "theo", "digits": "1234"}},
        "steps[0].evaluate.audio",
        "not found",
    ),
    ("steps.0.evaluate.audio", {"file": "voices/missing.flac"}, "steps[0].evaluate.audio", "not found"),
    (
        "steps.0.evaluate.audio",
        {"file": "voices/low.flac", "fsdd": {"speaker": "george", "digits": "1"}},
        "steps[0].evaluate.audio",
        "exactly one",
    ),
    ("steps.0.evaluate.order", "sofa", "steps[0].evaluate.order", "no order named"),
    ("household.members.0.role", "PARENT", "household.members[0].role", "not one of"),
    ("household.members.0.enroll", [{"file": "voices/low.flac"}], "household.members[0].enroll", "3 to 10"),
    (
        "household.members.0.digits",
        [{"prompt": "12a4", "audio": {"file": "voices/low.flac"}}],
        "household.members[0].digits[0].prompt",
        "1 to 10 digits",
    ),
    (
        "household.members.0.digits",
        {"fsdd_guided": "george"},
        "household.members[0].digits.fsdd_guided.concat[0]",
        "not found",
    ),
    ("household.currency", "XYZ", "household.currency", "ISO 4217"),
    ("household.time_zone", "Mars/Olympus", "household.time_zone", "IANA"),
    (
        "household.policy",
        {"rules": [{"role": "ADULT", "mode": "SOMETIMES"}]},
        "household.policy",
        "SOMETIMES",
    ),
    ("orders.towels.items.0.price", "20.001", "orders.towels.items[0].price", "decimals"),
    ("steps.1.wait", "2 weeks", "steps[1].wait", "not a duration"),
    ("steps.2.confirm.challenge", "nope", "steps[2].confirm.challenge", "earlier evaluate"),
    ("steps.2.confirm.digits", "${pn}", "steps[2].confirm.digits", "unknown template"),
    (
        "steps.2.expect",
        {"reasons": ["CHALLENGE_PASSED"]},
        "steps[2].expect.outcome",
        "exactly one of outcome or error",
    ),
    (
        "steps.2.expect",
        {"outcome": "ALLOW", "same_decision_as": "ask"},
        "steps[2].expect.same_decision_as",
        "earlier confirm",
    ),
]


@pytest.mark.parametrize(("where", "value", "field", "message"), BAD_CASES, ids=[c[2] for c in BAD_CASES])
def test_bad_file_names_path_and_field(
    tmp_path: Path, synth_root: Path, where: str, value: Any, field: str, message: str
) -> None:
    """Each kind of mistake is reported with the file's path and the exact field at fault."""
    path = write(tmp_path, "bad.yaml", mutated(lambda d: set_in(d, where, value)))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, AudioRenderer(synth_root))
    assert info.value.path == path
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value).startswith(f"{path}: {field}: ")


def test_digit_enrollment_loads_prompts_with_their_audio(tmp_path: Path, synth_root: Path) -> None:
    """A member's `digits` list becomes (prompt, audio) takes; digits without a voice enrollment
    are refused (templates are looked up by the member the answer's voice verifies as)."""
    takes = [{"prompt": "1234", "audio": {"fsdd": {"speaker": "george", "digits": "1234", "take": 0}}}]
    path = write(
        tmp_path, "digits.yaml", mutated(lambda d: d["household"]["members"][0].update(digits=takes))
    )
    member = load_scenario(path, AudioRenderer(synth_root)).households[0].members[0]
    assert [(prompt, spec.identity()) for prompt, spec in member.digits] == [("1234", "fsdd/george")]
    fsdd = member.digits[0][1].fsdd
    assert fsdd is not None
    assert fsdd.take == 0

    def without_voice(doc: dict[str, Any]) -> None:
        doc["household"]["members"][0].pop("enroll")
        doc["household"]["members"][0]["digits"] = takes

    path = write(tmp_path, "no-voice.yaml", mutated(without_voice))
    with pytest.raises(ScenarioError, match=r"members\[0\]\.digits: digit templates need a voice enrollment"):
        load_scenario(path, AudioRenderer(synth_root))


def test_guided_digit_enrollment_reads_each_prompt_from_fresh_takes(tmp_path: Path) -> None:
    """`digits: {fsdd_guided: SPEAKER}` is the guided prompts, each joined from the speaker's
    single-digit takes 0-2 with no recording used twice (answers use takes 10 and up)."""
    from purchase_guard.voice.digits import ENROLLMENT_PROMPTS

    root = tmp_path / "data"
    fsdd = root / "fsdd" / "recordings"
    fsdd.mkdir(parents=True)
    for digit in range(10):
        for take in (0, 1, 2, 7, 14, 21):
            (fsdd / f"{digit}_george_{take}.flac").write_bytes(b"")
    (root / "voices").mkdir()
    (root / "voices" / "low.flac").write_bytes(b"")
    path = write(
        tmp_path,
        "guided.yaml",
        mutated(lambda d: d["household"]["members"][0].update(digits={"fsdd_guided": "george"})),
    )
    member = load_scenario(path, AudioRenderer(root)).households[0].members[0]
    assert [p for p, _ in member.digits] == list(ENROLLMENT_PROMPTS)
    used = []
    for prompt, audio in member.digits:
        parts = [p.fsdd for p in audio.parts]
        assert all(f is not None and f.speaker == "george" for f in parts)
        assert "".join(f.digits for f in parts if f) == prompt
        used += [(f.digits, f.take) for f in parts if f]
    assert len(used) == len(set(used))
    assert max(take for _, take in used) <= 2


def test_missing_expectation_is_an_error(tmp_path: Path, synth_root: Path) -> None:
    """An evaluate step without `expect` cannot fail, so the file is refused."""
    path = write(tmp_path, "bad.yaml", mutated(lambda d: d["steps"][0].pop("expect")))
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.expect: required"):
        load_scenario(path, AudioRenderer(synth_root))


def test_broken_yaml_is_reported_with_its_line(tmp_path: Path, synth_root: Path) -> None:
    """A YAML syntax error names the file and the line."""
    path = write(tmp_path, "bad.yaml", "name: x\nsteps:\n  - evaluate: {order: [\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, AudioRenderer(synth_root))
    assert info.value.field.startswith("line ")
    assert "not valid YAML" in info.value.message


def test_several_households_need_a_household_on_each_step(tmp_path: Path, synth_root: Path) -> None:
    """With two households a step must say which one it runs in."""

    def two(doc: dict[str, Any]) -> None:
        doc["households"] = [doc.pop("household"), {"key": "jones", "copies": 3}]

    path = write(tmp_path, "bad.yaml", mutated(two))
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.evaluate\.household: required"):
        load_scenario(path, AudioRenderer(synth_root))


def test_start_wait_and_clips_set_requirements(tmp_path: Path, synth_root: Path) -> None:
    """A start time or a long wait requires clock control; broadcast clips require broadcast."""

    def change(doc: dict[str, Any]) -> None:
        doc["start"] = "2026-11-25T23:30:00"
        doc["broadcast_clips"] = [{"label": "ad", "audio": {"file": "voices/high.flac"}}]

    scenario = load_scenario(write(tmp_path, "s.yaml", mutated(change)), AudioRenderer(synth_root))
    assert set(scenario.requires) == {"clock", "broadcast"}
    assert scenario.start is not None
    assert scenario.start.utcoffset() is not None
    assert scenario.start.hour == 23


def test_household_copies_and_ranges() -> None:
    """`home-*` names every copy, `home-2..3` a range; a range past the last copy names nothing."""
    keys = ["home-1", "home-2", "home-3", "other"]
    assert expand_keys("home-*", keys) == ["home-1", "home-2", "home-3"]
    assert expand_keys("home-2..3", keys) == ["home-2", "home-3"]
    assert expand_keys("home-2..4", keys) == []
    assert expand_keys("other", keys) == ["other"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("2m", 120.0), ("24h1s", 86401.0), ("1h30m", 5400.0), ("1d", 86400.0)],
)
def test_durations(text: Any, seconds: float) -> None:
    """Durations accept seconds or d/h/m/s/ms units, combined."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 weeks", "m5", "-3", True])
def test_bad_durations(text: Any) -> None:
    """Anything else is refused rather than read as zero."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_discover_finds_yaml_recursively(tmp_path: Path) -> None:
    """Folders are searched for *.yaml and *.yml, sorted; named files are taken as they are."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.yaml", "a/x.yml", "a/notes.md"):
        (tmp_path / name).write_text("x")
    assert discover([tmp_path / "a"]) == [tmp_path / "a" / "b" / "z.yaml", tmp_path / "a" / "x.yml"]
