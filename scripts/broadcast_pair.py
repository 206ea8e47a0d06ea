"""Compare two recordings as the broadcast check would: is one a copy of the other?

    .venv/bin/python scripts/broadcast_pair.py A.flac B.flac [--reach-s 3.0]

For looking into a reported match (or a miss): both files are decoded and fingerprinted as
the guard does, compared at every 8 ms offset within +-reach, and the strongest alignment
is printed with its error rate, compared and effective bits, the threshold the configured
rule sets for them, and whether the rule accepts it. Prints only figures, never audio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from purchase_guard.broadcast.fingerprint import fingerprint
from purchase_guard.broadcast.match import DEFAULT_MATCH, best_offset
from purchase_guard.errors import GuardError
from purchase_guard.voice.audio import decode_audio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--reach-s", type=float, default=3.0, help="largest offset tried either way (s)")
    args = ap.parse_args(argv)
    try:
        prints = [fingerprint(decode_audio(encoded=path.read_bytes())) for path in (args.a, args.b)]
    except (OSError, GuardError) as exc:
        print(f"cannot read the audio: {exc}", file=sys.stderr)
        return 2
    a, b = prints
    reach = round(args.reach_s / a.hop_s)
    m = best_offset(a, b, range(-reach, reach + 1))
    print(f"voiced: {a.voiced_seconds:.2f} s and {b.voiced_seconds:.2f} s")
    if m is None:
        print(f"no offset within +-{args.reach_s} s compares {DEFAULT_MATCH.min_bits} bits: no match")
        return 0
    verdict = "match" if DEFAULT_MATCH.accepts(m) else "no match"
    threshold = DEFAULT_MATCH.max_ber(m.effective_bits)
    print(
        f"strongest alignment: b {m.offset * a.hop_s:+.3f} s, BER {m.ber:.3f} over {m.bits} bits "
        f"({m.effective_bits:.0f} effective); threshold {threshold:.3f}: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
