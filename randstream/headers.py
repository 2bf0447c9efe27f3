"""What every response carries: the security headers, and the stylesheet the policy admits.

The WSGI stack (stack.py: SecurityHeaders) adds SECURITY_HEADERS to every response, Flask's
and Engine.IO's; the server's own refusals (refusals.py) carry them too. The dashboard's stylesheet goes inline
into the page: one it had to fetch would hold the first paint back by a round trip. The
policy admits exactly this text, by hash; scripts stay external.
"""

from __future__ import annotations

import base64
import hashlib

from markupsafe import Markup

from .paths import ASSETS

DASHBOARD_CSS = Markup((ASSETS / "static/css/dashboard.css").read_text())
_CSS_HASH = base64.b64encode(hashlib.sha256(DASHBOARD_CSS.encode()).digest()).decode()

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'self'; script-src 'self'; style-src 'self' 'sha256-{_CSS_HASH}'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
