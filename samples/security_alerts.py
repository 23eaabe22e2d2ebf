"""Security alerts from CloudTrail: the events an audit team wants to hear about at once.

- root account sign-in, and console sign-in without MFA;
- CloudTrail tampering: StopLogging, DeleteTrail, UpdateTrail, PutEventSelectors;
- IAM policy changes: attaching, putting, creating or deleting policies;
- bursts of AccessDenied from one principal (N within a window).

From the repository root:
Run stand-alone:          python samples/security_alerts.py [--queue-url URL | PATH...]
Run as a daemon handler:
    trailproc run --handler samples.security_alerts:handlers --queue-url URL
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

import trailproc


@dataclass(frozen=True)
class Alert:
    rule: str
    event_id: str | None
    principal: str | None
    when: str | None
    detail: str = ""


ACCESS_DENIED_BURST = 5  # denials ...
ACCESS_DENIED_WINDOW = dt.timedelta(minutes=10)  # ... within this window
TRAIL_TAMPERING = ["StopLogging", "DeleteTrail", "UpdateTrail", "PutEventSelectors"]
IAM_POLICY_CHANGES = [
    "Attach*Policy", "Detach*Policy", "Put*Policy", "Delete*Policy",
    "CreatePolicy", "CreatePolicyVersion", "SetDefaultPolicyVersion",
]  # fmt: skip


def build(emit: Callable[[Alert], None]) -> trailproc.Handlers:
    """A Handlers registry sending every alert to `emit` (stdout JSON by default)."""
    handlers = trailproc.Handlers()
    denials: dict[str, collections.deque[dt.datetime]] = collections.defaultdict(collections.deque)

    def alert(rule: str, e: trailproc.Event, detail: str = "") -> None:
        emit(Alert(rule, e.event_id, e.principal_arn, e.event_time_text, detail))

    @handlers.on(event_source="signin.amazonaws.com", event_name="ConsoleLogin")
    def console_login(e: trailproc.Event) -> None:
        identity = e.user_identity or {}
        if identity.get("type") == "Root":
            alert("root-sign-in", e, f"from {e.source_ip_address}")
        if (e.additional_event_data or {}).get("MFAUsed") == "No":
            alert("console-sign-in-without-mfa", e, f"from {e.source_ip_address}")

    @handlers.on(event_source="cloudtrail.amazonaws.com", event_name=TRAIL_TAMPERING)
    def trail_tampering(e: trailproc.Event) -> None:
        alert("cloudtrail-tampering", e, str(e.event_name))

    @handlers.on(event_source="iam.amazonaws.com", event_name=IAM_POLICY_CHANGES,
                 where=lambda e: e.error_code is None)  # fmt: skip
    def iam_policy_change(e: trailproc.Event) -> None:
        params = e.request_parameters or {}
        target = params.get("roleName") or params.get("userName") or params.get("groupName")
        detail = " ".join(filter(None, [e.event_name, target, params.get("policyArn")]))
        alert("iam-policy-change", e, detail)

    denied_codes = ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException")

    @handlers.on(where=lambda e: (e.error_code or "").endswith(denied_codes))
    def access_denied(e: trailproc.Event) -> None:
        when, who = e.event_time, e.principal_arn or "unknown"
        if when is None:
            return
        window = denials[who]
        window.append(when)
        while window and when - window[0] > ACCESS_DENIED_WINDOW:
            window.popleft()
        if len(window) == ACCESS_DENIED_BURST:
            alert("access-denied-burst", e, f"{len(window)} denials within {ACCESS_DENIED_WINDOW}")

    return handlers


def print_alert(alert: Alert) -> None:
    print(json.dumps(alert.__dict__), file=sys.stdout, flush=True)


handlers = build(print_alert)

if __name__ == "__main__":
    from _runner import main

    main(handlers, __doc__.splitlines()[0])
