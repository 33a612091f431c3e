"""Failed sign-ins, throttled per account and per client address (issue 8, item 5).

Both ways in, the login page (`/login/`) and the API's token endpoint
(`POST /api/v1/auth/token/`), share one rule: after N failed attempts within the window, for
one username or from one address, the next attempt is refused with 429 and `Retry-After`, before
any password is hashed. N and the window are one setting, the DRF throttle rate
`login_failures` (`IMAGECLEAN_LOGIN_FAILURES`, "10/15m" by default: 10 failures, 15 minutes).

The counting is DRF's `SimpleRateThrottle` (a sliding window of timestamps in Django's cache),
with one difference: it counts failures, not requests. A request is checked with
`allow_request` (which records nothing), and Django's `user_login_failed` signal, sent by
`authenticate()` for every failed attempt from either path (and the admin's login), records
one failure for the username and one for the address (labeling/signals.py). A success does
not reset the counters: an attacker who also owns an account cannot clear them.

The address is DRF's `get_ident`: REMOTE_ADDR, or the client's entry in X-Forwarded-For when
`NUM_PROXIES` (`IMAGECLEAN_NUM_PROXIES`) says how many proxies stand in front.

The counters live in Django's cache: shared between processes only when the cache is (Redis
with `REDIS_CACHE_URL`; the embedded default uses a file cache under var/).
"""

from __future__ import annotations

import hashlib
import re

from rest_framework.throttling import SimpleRateThrottle

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\w*\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _LoginFailureThrottle(SimpleRateThrottle):
    """Refuses an attempt once `num_requests` failures were recorded within `duration`."""

    scope = "login_failures"
    kind = ""

    def parse_rate(self, rate):
        """DRF's "N/period", where the period may carry a count: "10/15m" is 10 per 15 minutes."""
        if rate is None:
            return (None, None)
        match = _RATE_RE.match(rate)
        if match is None:
            raise ValueError(f"Bad throttle rate {rate!r}; write it like 10/15m.")
        count, multiple, unit = match.groups()
        return int(count), int(multiple or 1) * _UNIT_SECONDS[unit]

    def ident_of(self, request, username: str) -> str | None:
        raise NotImplementedError

    def key_for(self, request, username: str) -> str | None:
        ident = self.ident_of(request, username)
        if not ident:
            return None
        return self.cache_format % {"scope": f"{self.scope}_{self.kind}", "ident": ident}

    def get_cache_key(self, request, view):
        return self.key_for(request, submitted_username(request))

    def _history(self, key: str) -> list[float]:
        self.now = self.timer()
        history = self.cache.get(key, [])
        return [t for t in history if t > self.now - self.duration]

    def allow_request(self, request, view) -> bool:
        """True unless too many failures were recorded; records nothing itself."""
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.history = self._history(key)
        return len(self.history) < self.num_requests

    def record_failure(self, request, username: str) -> None:
        if self.rate is None:
            return
        key = self.key_for(request, username)
        if key is None:
            return
        history = self._history(key)
        history.insert(0, self.now)
        self.cache.set(key, history, self.duration)


class LoginFailuresPerAddress(_LoginFailureThrottle):
    kind = "address"

    def ident_of(self, request, username: str) -> str | None:
        return self.get_ident(request)


class LoginFailuresPerAccount(_LoginFailureThrottle):
    kind = "account"

    def ident_of(self, request, username: str) -> str | None:
        # Case-folded: "Alice" and "alice" are one account to an attacker guessing passwords.
        # Hashed: whatever a client sends stays a short, safe cache key.
        name = (username or "").strip().casefold()[:150]
        return hashlib.sha256(name.encode()).hexdigest() if name else None


LOGIN_FAILURE_THROTTLES = (LoginFailuresPerAddress, LoginFailuresPerAccount)


def submitted_username(request) -> str:
    """The username a sign-in request carries (a form field, or DRF's parsed body)."""
    data = getattr(request, "data", None)
    if data is None:
        data = request.POST
    value = data.get("username", "") if hasattr(data, "get") else ""
    return value if isinstance(value, str) else ""


def login_refused_for(request) -> float | None:
    """Seconds to wait when this sign-in attempt must be refused (429); None to let it try."""
    waits = []
    for throttle_class in LOGIN_FAILURE_THROTTLES:
        throttle = throttle_class()
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or 1)
    return max(waits) if waits else None


def login_failure_record(*, request, username: str) -> None:
    """One more failure for this username and for this address."""
    for throttle_class in LOGIN_FAILURE_THROTTLES:
        throttle_class().record_failure(request, username)
