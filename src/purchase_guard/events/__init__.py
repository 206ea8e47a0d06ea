"""Events pushed to parents: which facts become events (derive), how a webhook delivery is signed and
verified (signing), and the worker that delivers the outbox to each household's webhook (worker)."""
