"""The parents' web console: server-rendered pages over a running guard's admin API.

The console holds no household data of its own. Every page is read from the guard over gRPC
(HouseholdAdmin, HouseholdData) with the signed-in parent's own credential, which lives only in
the console's memory, in a server-side session; the browser holds a random session id.

    settings.py   PURCHASE_GUARD_CONSOLE_* settings, validated at start
    sessions.py   server-side sessions (idle and absolute expiry) and their CSRF tokens
    throttle.py   sign-in throttling per client address and per credential prefix
    guard_api.py  the adapter to the guard: typed views, refusals with google.rpc details
    forms.py      the policy form <-> the policy (pure), and where the guard's messages belong
    web.py        the Starlette app: routes, security headers, cookies
    server.py     uvicorn on a socket of its own (port 0 for tests)
"""
