"""Data protection services: export (GDPR Art. 15), erasure (Art. 17) and retention.

The sealing they rely on (per-household envelope encryption) lives below the store, in
`purchase_guard.sealing`, since the store seals and opens values itself.
"""
