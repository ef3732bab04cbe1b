"""Reading the nameko configuration: one place for defaults and types.

Every default lives once, in DEFAULTS below, and `setting(config, key)` takes none. This
table, not deploy/config.yaml, is the code's source: the YAML loader types `${KEY:60}` as an
int where the code needs a float (an operator's 0.5 must stay 0.5, not become int("0.5")), and
the services run without deploy/ (tests build their configuration as a dict; services never
import deploy). deploy/config.yaml still declares `KEY: ${KEY:default}` for `nameko run
--config`; tests/test_settings.py loads it as nameko does and fails unless its defaults equal
this table, key for key, so the two cannot disagree.
"""

from nameko.exceptions import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# the default of each key of deploy/config.yaml, typed as the code reads it (None: required,
# or empty, as the YAML loader gives `${KEY:}`); what each one means is said there
DEFAULTS = {
    "AMQP_URI": "pyamqp://guest:guest@127.0.0.1:5672/",
    "MONGO_URI": "mongodb://127.0.0.1:27017",
    "MONGO_DB_PREFIX": None,
    "MONGO_RETRY_SECONDS": 5.0,
    "WEB_SERVER_ADDRESS": "0.0.0.0:8000",
    "AMQP_POOL_LIMIT": 200,
    "QUEUE_TYPE": "quorum",
    "WEB_MAX_CONNECTIONS": 2000,
    "WEB_IDLE_TIMEOUT": 20.0,
    "WEB_LISTEN_BACKLOG": 1024,
    "max_workers": 20,
    "RPC_TIMEOUT": 5.0,
    "HOLD_MAX_AGE_SECONDS": 60.0,
    "HOLD_SWEEP_SECONDS": 10.0,
    "BOOKING_TOKEN_SECRET": None,
    "REQUEST_TOKEN_SECRET": None,
    "SLOT_ID_SECRET": None,
    "BOOKING_CONFIRM_MINUTES": 60.0,
    "BOOKING_EXPIRY_SWEEP_SECONDS": 30.0,
    "REMINDER_TIMER_SECONDS": 300.0,
    "UNCONFIRMED_PER_CLIENT": 20,
    "UNCONFIRMED_PER_DOMAIN": 10,
    "UNCONFIRMED_RELEASE_SHARE": 0.5,
    "UNCONFIRMED_LARGE_DOMAINS": (
        "gmail.com,googlemail.com,outlook.com,outlook.fr,hotmail.com,hotmail.fr,live.com,live.fr,"
        "msn.com,yahoo.com,yahoo.fr,ymail.com,icloud.com,me.com,aol.com,proton.me,protonmail.com,"
        "gmx.com,gmx.fr,orange.fr,wanadoo.fr,free.fr,sfr.fr,neuf.fr,laposte.net,bbox.fr"),
    "SLOTS_DECOY_SHARE": 0.0,
    "CONVOCATION_SIGNING_KEY": None,
    "WALK_IN_HOURS": "08:30-12:00",
    "ADMIN_SECRET_KEY": None,
    "ADMIN_SESSION_SECONDS": 28800,
    "ADMIN_MAX_FAILED_LOGINS": 5,
    "ADMIN_LOCKOUT_SECONDS": 900,
    "ADMIN_COOKIE_SECURE": False,
    "ADMIN_PASSWORD_TIME_COST": 3,
    "ADMIN_PASSWORD_MEMORY_KIB": 65536,
    "ADMIN_PASSWORD_PARALLELISM": 4,
    "ATTESTATION_SIGNING_KEY": None,
    "ATTEMPTS_PER_DAY": 3,
    "ATTEMPTS_PER_EMAIL_PER_DAY": 3,
    "PUBLIC_FORM_SECRET": None,
    "PUBLIC_ATTEMPTS_ENABLED": True,
    "TRUSTED_PROXIES": "127.0.0.1,::1",
    "SLOT_VIEW_SECONDS": 1.0,
    "OUTBOX_GRACE_SECONDS": 5.0,
    "OUTBOX_RELAY_SECONDS": 5.0,
    "INBOX_LEASE_SECONDS": 120.0,
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": 1025,
    "SMTP_TIMEOUT": 10.0,
    "SMTP_STARTTLS": False,
    "SMTP_USER": None,
    "SMTP_PASSWORD": None,
    "MAIL_FROM": "Préfecture de l'Hérault <no-reply@rdv.herault.gouv.fr>",
    "MAIL_DOMAIN": "rdv.herault.gouv.fr",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    "REPORT_URL": "https://www.internet-signalement.gouv.fr",
    "REPORT_EMAIL": "pref-etrangers@herault.gouv.fr",
    "PUBLIC_HOST": "Préfecture de l'Hérault, 34 place des Martyrs de la Résistance, 34062 Montpellier",
    "NOTIFY_MAX_ATTEMPTS": 8,
    "NOTIFY_RETRY_BASE_SECONDS": 2.0,
    "NOTIFY_RETRY_MAX_SECONDS": 60.0,
    "NOTIFY_LEASE_SECONDS": 60.0,
    "NOTIFY_SENDERS": 8,
    "NOTIFY_SWEEP_SECONDS": 10.0,
    "MAIL_PER_ADDRESS_PER_DAY": 8,
    "EMAIL_PROVIDER_RULES": True,
    "FRAUD_SAME_EMAIL_SAME_PERSON": "keep_earliest",
    "FRAUD_SAME_EMAIL_DIFFERENT_PEOPLE": "cancel_all",
    "FRAUD_WINDOW_SECONDS": 600.0,
    "FRAUD_RELEASE_WINDOW_SECONDS": 120.0,
    "FRAUD_FAST_SECONDS": 2.0,
    "FRAUD_QUICK_SECONDS": 10.0,
    "FRAUD_AGENT_IDENTITIES": 10,
    "FRAUD_CANCEL_SCORE": 0.8,
    "FRAUD_REVIEW_SCORE": 0.4,
    "FRAUD_MAX_ATTEMPTS": 6,
    "HEALTH_RPC_TIMEOUT": 2.0,
    "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15672",
    "RABBITMQ_MANAGEMENT_USER": "guest",
    "RABBITMQ_MANAGEMENT_PASSWORD": "guest",
    "MONITOR_HTTP_TIMEOUT": 2.0,
    "MONITOR_SAMPLE_SECONDS": 15.0,
    "MONITOR_GROWTH_SECONDS": 300.0,
    "FAIRNESS_WEEKS": 8,
    "FAIRNESS_CACHE_SECONDS": 300.0,
    "RUN_VAR_DIR": "var",
    "RUN_MONGO_PORT": 27017,
    "RUN_INSTANCES": 1,
    "RUN_GATEWAY_PORT": 8010,
    "RELEASE_TIMER_SECONDS": 10.0,
    "RELEASE_WINDOWS": "09:00-12:00,14:00-17:30",
    "RELEASE_LEAD_HOURS": 48.0,
    "RELEASE_ADVANCE_DAYS": 21.0,
    "RELEASE_BATCH_MIN": 1,
    "RELEASE_BATCH_MAX": 25,
    "RELEASE_DEMO_MINUTES": 0.0,
    "FREED_PLACE_MIN_SECONDS": 1800.0,
    "FREED_PLACE_MAX_SECONDS": 5400.0,
    "PROCEDURE_MODE_DEFAULT": "requests",
    "REQUEST_OFFER_HOURS": 48.0,
    "REQUEST_OFFER_MARGIN_HOURS": 24.0,
    "REQUEST_OFFER_FLOOR_HOURS": 4.0,
    "REQUEST_CONFIRM_HOURS": 48.0,
    "REQUEST_TIMER_SECONDS": 10.0,
    "REQUEST_HORIZON_DAYS": 120,
    "REQUEST_LEASE_SECONDS": 30.0,
    "REQUEST_HOLDING_GRACE_SECONDS": 30.0,
    "REQUEST_DRAW_RETENTION_DAYS": 365.0,
    "BOOKING_RETENTION_DAYS": 365.0,
    "REQUEST_RETENTION_DAYS": 365.0,
    "NOTIFY_RETENTION_DAYS": 90.0,
    "RETENTION_TIMER_SECONDS": 3600.0,
    "RETENTION_BATCH": 200,
    "PARTNER_SESSION_SECONDS": 28800,
    "REGISTER_TOKEN_SECRET": None,
    "REGISTER_CHECKED_PROCEDURES": "renewal,renewal_10y",
    "VISA_CHECKED_PROCEDURES": "first_application",
    "VISA_VALIDITY_GRACE_DAYS": 90,
    "REGISTER_MAX_LINES": 200000,
    "REGISTER_IMPORT_MAX_BYTES": 16777216,
    "REGISTER_IMPORT_TIMEOUT": 300.0,
    "RENEWAL_WINDOW_FROM_DAYS": 120,
    "RENEWAL_WINDOW_TO_DAYS": 60,
    "REGISTER_INVITE_TIMER_SECONDS": 300.0,
    "REGISTER_INVITATIONS_PER_PASS": 200,
}


def as_bool(value):
    """YAML gives booleans, a dict from a test or an operator may give "false": both mean it."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError(f"not a yes/no value: {value!r}")
    return bool(value)


def setting(config, key):
    """config[key] typed as its default in DEFAULTS (a str when that is None); the default
    when unset. A key missing from DEFAULTS is a KeyError: declare it there and in
    deploy/config.yaml."""
    default = DEFAULTS[key]
    value = config.get(key)
    if value is None or value == "":
        return default
    if isinstance(default, bool):
        return as_bool(value)
    return (str if default is None else type(default))(value)


# the retention periods of personal data (services/common/retention.py): erasure cannot be
# undone, so a period below this (a 0 or a -1 typed for "never", a unit mistaken) would erase
# current bookings, requests and messages for good. A service refuses to start with one
RETENTION_FLOOR_DAYS = 30
RETENTION_KEYS = ("BOOKING_RETENTION_DAYS", "REQUEST_RETENTION_DAYS", "NOTIFY_RETENTION_DAYS")


def retention_days(config, key):
    """A retention period (RETENTION_KEYS), in days; ConfigurationError when it is not a
    number of at least RETENTION_FLOOR_DAYS."""
    try:
        days = setting(config, key)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number of days, got {config.get(key)!r}")
    if not days >= RETENTION_FLOOR_DAYS:  # NaN too
        raise ConfigurationError(
            f"{key} must be at least {RETENTION_FLOOR_DAYS} days (erasure cannot be undone), "
            f"got {config.get(key)!r}")
    return days
