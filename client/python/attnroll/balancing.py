"""Client-side load balancing and retries over a pool of replicas: the
policy, the attempts per call and the gRPC service config of a channel, by
the C++ client's rules (client/cpp/channel.h; `attnroll channel` prints its
side, and the tests compare both).

Targets: "host:port" (one server), "dns:///name:port" (every address the
name resolves to, e.g. a Kubernetes headless service) or a static list
"ipv4:a:p1,b:p2" / "ipv6:[a]:p1,[b]:p2".
"""

import json
from typing import Any, Dict, Optional

from attnroll.errors import AttnrollError

POLICIES = ("auto", "round_robin", "pick_first")
# gRPC caps a retry policy's maxAttempts at 5.
MAX_ATTEMPTS = 5


def _static_addresses(target: str) -> int:
    if not (target.startswith("ipv4:") or target.startswith("ipv6:")):
        return 1
    return 1 + target.count(",")


def check(lb: str, attempts: Optional[int]) -> None:
    """Raises AttnrollError (INVALID_ARGUMENT) for a bad lb or attempts."""
    if lb not in POLICIES:
        raise AttnrollError.invalid("lb: expected auto|round_robin|pick_first, got %r" % (lb,))
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)
                                 or not 1 <= attempts <= MAX_ATTEMPTS):
        raise AttnrollError.invalid("attempts: expected an integer in 1..%d (None: automatic), "
                                    "got %r" % (MAX_ATTEMPTS, attempts))


def effective_lb(target: str, lb: str = "auto") -> str:
    """The policy a channel to target uses: lb, or for "auto" round_robin
    for a dns: target or a static list of more than one address, pick_first
    otherwise (one server, even when its name resolves to several addresses,
    e.g. localhost)."""
    if lb != "auto":
        return lb
    if target.startswith("dns:") or _static_addresses(target) > 1:
        return "round_robin"
    return "pick_first"


def effective_attempts(target: str, lb: str = "auto", attempts: Optional[int] = None) -> int:
    """attempts, or by default 3 with round_robin (another replica to try)
    and 1 (no retries) with pick_first."""
    if attempts is not None:
        return attempts
    return 3 if effective_lb(target, lb) == "round_robin" else 1


# Every method but PinBaseline and RemoveBaseline (not safe to repeat).
RETRIED_METHODS = ("Explain", "ExplainStream", "GetServerInfo", "Compare", "ExplainPair", "Audit",
                   "Monitor", "ListBaselines")


def service_config(target: str, lb: str = "auto", attempts: Optional[int] = None) -> Dict[str, Any]:
    """The channel's service config: the policy, and with more than one
    attempt a retry policy for the methods of attnroll.v1.AttnrollService
    that are safe to repeat (not PinBaseline and RemoveBaseline: a replica
    may have done one and died before answering; not health: a probe asks
    the replica it reaches) retrying UNAVAILABLE only, backoff 0.1 s doubling
    up to 1 s."""
    config: Dict[str, Any] = {"loadBalancingConfig": [{effective_lb(target, lb): {}}]}
    n = effective_attempts(target, lb, attempts)
    if n > 1:
        config["methodConfig"] = [{
            "name": [{"service": "attnroll.v1.AttnrollService", "method": m}
                     for m in RETRIED_METHODS],
            "retryPolicy": {"maxAttempts": n, "initialBackoff": "0.1s", "maxBackoff": "1s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }]
    return config


def channel_options(target: str, lb: str = "auto", attempts: Optional[int] = None):
    """gRPC channel options carrying service_config(...) (and none from DNS)."""
    return [("grpc.service_config", json.dumps(service_config(target, lb, attempts))),
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.enable_retries", 1)]
