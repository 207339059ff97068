"""structd's exceptions: one class per family of gRPC status codes.

Every error of the daemon or of the client library arrives as an instance
of one of these, carrying the status code (``code``, the name, e.g.
``"NOT_FOUND"``; ``code_value``, its number) and the message, which says
what went wrong and how to fix it. Catch ``structd.Error`` for all of them.

=====================  ===========================================  ==========================
class                  codes                                        also a
=====================  ===========================================  ==========================
InvalidArgument        INVALID_ARGUMENT, OUT_OF_RANGE               ValueError
NotFound               NOT_FOUND                                    LookupError
AlreadyExists          ALREADY_EXISTS
PermissionDenied       PERMISSION_DENIED, UNAUTHENTICATED           PermissionError
FailedPrecondition     FAILED_PRECONDITION, ABORTED
UnboundMethod          FAILED_PRECONDITION (no behavior bound)      AttributeError
ResourceExhausted      RESOURCE_EXHAUSTED
Unavailable            UNAVAILABLE                                  ConnectionError
Timeout                DEADLINE_EXCEEDED                            TimeoutError
Internal               INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED,
                       CANCELLED
=====================  ===========================================  ==========================

``OwnerDied`` is not a status: a mutex's last holder died holding it. The
thread that gets it holds the mutex (``.mutex``) and must repair the data,
then release it.
"""

_CODE_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND", 6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL",
    14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class Error(Exception):
    """A structd error: ``code`` (status name), ``code_value``, ``message``."""

    def __init__(self, message: str, code_value: int = 2):
        super().__init__(message)
        self.message = message
        self.code_value = code_value
        self.code = _CODE_NAMES.get(code_value, str(code_value))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(Error, ValueError):
    """The request is malformed: a bad name, field, value or ref."""


class NotFound(Error, LookupError):
    """No such channel, type, root, session, or the instance was freed."""


class AlreadyExists(Error):
    """A channel or root of that name exists."""


class PermissionDenied(Error, PermissionError):
    """Wrong capability or uid for the channel."""


class FailedPrecondition(Error):
    """The state does not allow it now (sealed, wrong type, released...)."""


class UnboundMethod(FailedPrecondition, AttributeError):
    """No behavior bound for the instance's type in this process, or the
    bound behavior has no such method."""


class ResourceExhausted(Error):
    """A quota or limit was reached (memory, instances, channels)."""


class Unavailable(Error, ConnectionError):
    """The daemon cannot be reached (not started, restarting)."""


class Timeout(Error, TimeoutError):
    """A deadline passed."""


class Internal(Error):
    """A bug or damaged data (run ``structctl check``)."""


class OwnerDied(Error):
    """A mutex's last holder died holding it. This thread now holds it
    (``mutex``): the data it guards may be half-updated; repair it, then
    ``mutex.release()``."""

    def __init__(self, message: str, mutex=None):
        super().__init__(message, 10)
        self.code = "OWNER_DIED"
        self.mutex = mutex


_BY_CODE = {
    3: InvalidArgument, 11: InvalidArgument,
    5: NotFound,
    6: AlreadyExists,
    7: PermissionDenied, 16: PermissionDenied,
    9: FailedPrecondition, 10: FailedPrecondition,
    8: ResourceExhausted,
    14: Unavailable,
    4: Timeout,
}


def _class_for_code(code_value: int) -> type:
    return _BY_CODE.get(code_value, Internal)
