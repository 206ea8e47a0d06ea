"""Data protection: per-household envelope encryption, export (GDPR Art. 15), erasure (Art. 17)
and retention. Import the submodules directly; this package imports nothing so that the store
can use `privacy.keys` without pulling in the parts that use the store."""
