"""HTML responses for both gateways' pages, with the security headers every page needs.

Nothing is loaded from another site (DESIGN.md section 10): the Content-Security-Policy allows
only this origin, no inline script, and no framing (against click-jacking).
"""
from werkzeug.wrappers import Response

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; object-src 'none'")


def page_response(body, status=200, private=True, headers=None):
    """An HTML page. private: it shows personal data or a token, so no cache may keep it."""
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store" if private else "public, max-age=300"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response
