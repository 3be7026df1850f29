"""The one exception the package raises for a refused or failed call."""

import grpc


class AttnrollError(Exception):
    """A call the server (or the client, before sending) refused or that failed.

    Attributes:
        code: the gRPC status code, a ``grpc.StatusCode`` (e.g.
            ``grpc.StatusCode.INVALID_ARGUMENT``).
        message: the status message, naming the field, the expected and the
            seen value.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "AttnrollError":
        """The AttnrollError of a failed gRPC call."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code, details or "")

    @classmethod
    def invalid(cls, message: str) -> "AttnrollError":
        """An INVALID_ARGUMENT found by the client."""
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message)


_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def code_from_number(number: int) -> grpc.StatusCode:
    """grpc.StatusCode for a canonical code number (as in PassError.code)."""
    return _CODE_BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)
