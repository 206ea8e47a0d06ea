"""The one error tree of purchase-guard. The gRPC interceptor maps it to status codes.

    GuardError                      -> INTERNAL (never raised directly for bad input)
    +-- InvalidArgument             -> INVALID_ARGUMENT   (malformed request, bad audio, bad money)
    |   +-- AudioError              -> INVALID_ARGUMENT   (undecodable, wrong rate, empty, too long)
    |   +-- WeakPin                 -> INVALID_ARGUMENT   (guessable or malformed PIN)
    |   +-- EnrollmentRejected      -> INVALID_ARGUMENT   (takes unusable for a voiceprint)
    +-- NotFound                    -> NOT_FOUND          (unknown household, member, challenge)
    +-- AlreadyExists               -> ALREADY_EXISTS     (request id reused with another request)
    +-- FailedPrecondition          -> FAILED_PRECONDITION (state does not allow the call)
    +-- Aborted                     -> ABORTED            (state changed under the call; retry)
    +-- Unauthenticated             -> UNAUTHENTICATED    (no or unknown credential)
    +-- PermissionDenied            -> PERMISSION_DENIED  (credential for another household)
    +-- ResourceExhausted           -> RESOURCE_EXHAUSTED (payload or rate limits)
    +-- Unavailable                 -> UNAVAILABLE        (a dependency is down)

A DENY is a normal answer, never an exception. Inside Evaluate and Confirm, an error
in a check is caught by the pipeline and turned into DENY with GUARD_ERROR, so a
failing check can never become an ALLOW; only bad *input* surfaces as an error status.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base of every error the guard raises on purpose."""


class InvalidArgument(GuardError):
    """The request is malformed; the message says which field and why, and `field` names it (a
    request field path such as "order.total.currency" or "rules[0].daily_cap_minor") so a program
    can read it from the google.rpc BadRequest detail the api layer attaches."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class AudioError(InvalidArgument):
    """Audio could not be decoded or is outside the accepted range."""


class WeakPin(InvalidArgument):
    """The PIN is malformed or trivially guessable."""


class EnrollmentRejected(InvalidArgument):
    """Enrollment takes are unusable; `problems` lists (take index, reason). The api layer names each
    take by the request field that carried it (EnrollVoice `utterances[i]`, EnrollDigits `takes[i]`)."""

    def __init__(self, message: str, problems: tuple[tuple[int, str], ...] = (), *, field: str = "") -> None:
        super().__init__(message, field=field)
        self.problems = problems


class NotFound(GuardError):
    """A referenced household, member or challenge does not exist (for this caller)."""


class AlreadyExists(GuardError):
    """The thing exists already, or a request id was reused for a different request."""


class FailedPrecondition(GuardError):
    """The system is not in a state that allows the call (e.g. no voiceprint enrolled)."""


class Aborted(GuardError):
    """A compare-and-set lost: what the call was based on changed while it ran. Safe to retry."""


class Unauthenticated(GuardError):
    """No credential, or one the guard does not know."""


class PermissionDenied(GuardError):
    """The credential is valid but not for this household."""


class ResourceExhausted(GuardError):
    """A size or rate limit was hit."""


class Unavailable(GuardError):
    """A dependency (store, model) is unavailable; try again later."""
