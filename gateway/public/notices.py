"""The three notices every public site of the State carries, linked from every page's footer:
the accessibility statement (`/accessibilite`), the personal-data notice
(`/donnees-personnelles`) and the legal notice (`/mentions-legales`). Wording in
templates/notice_*.html.j2, French and English like the other pages.

The personal-data notice states the retention the code applies, read here from the same
settings the services read (deploy/config.yaml is shared by every process), so the page cannot
promise a period the system does not keep.
"""
from services.common.settings import setting

# path -> (template, French title, English title): the footer's links and the routes
NOTICES = {
    "/accessibilite": ("notice_accessibility.html.j2", "Déclaration d'accessibilité",
                       "Accessibility statement"),
    "/donnees-personnelles": ("notice_personal_data.html.j2", "Données personnelles",
                              "Personal data"),
    "/mentions-legales": ("notice_legal.html.j2", "Mentions légales", "Legal notice"),
}

# the daily counters (e-mails sent to an address, attempts per person) expire two days after
# their day: services/common/daily_limit.py
DAILY_COUNTER_DAYS = 2


def retention(config):
    """The periods the personal-data notice states, from configuration."""
    return {
        "booking_confirm_minutes": round(setting(config, "BOOKING_CONFIRM_MINUTES")),
        "request_confirm_hours": round(setting(config, "REQUEST_CONFIRM_HOURS")),
        "draw_days": round(setting(config, "REQUEST_DRAW_RETENTION_DAYS")),
        # personal data erased by each service's pass (services/common/retention.py)
        "booking_days": round(setting(config, "BOOKING_RETENTION_DAYS")),
        "request_days": round(setting(config, "REQUEST_RETENTION_DAYS")),
        "notify_days": round(setting(config, "NOTIFY_RETENTION_DAYS")),
        "daily_counter_days": DAILY_COUNTER_DAYS,
        "admin_session_hours": round(setting(config, "ADMIN_SESSION_SECONDS") / 3600),
    }


def render(current, path):
    """The notice at `path` for this request (pages.Page); the same for everyone."""
    template, _, _ = NOTICES[path]
    return current.render(template, public=True, retention=current.settings.retention,
                          host=current.settings.host)
