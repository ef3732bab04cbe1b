"""The public fairness page (`GET /fairness`): for each procedure, what anyone may know.

No personal data: counts, medians and dates only, from the slots and booking services'
`figures` RPCs. Per procedure: the wait until the next free appointment now, the median wait
between booking and appointment week by week over the last weeks, how quickly the published
places were taken, how many bookings were cancelled as trafficking, and the reminder that
appointments are free. The plots are SVG drawn here (no script), readable at 320 px.

The figures are the same for everyone: the page is cacheable (per language: it has the
header, navigation and language selector of every page, templates/_layout.html.j2), and each
gateway process keeps them FAIRNESS_CACHE_SECONDS, so a crowd reading it costs the services one
call per period.
"""
import time

from nameko.extensions import DependencyProvider

from services.common import i18n
from services.common.reference_data import FREE_NOTICE, PROCEDURES
from services.common.reference_data import procedure_view as labelled
from services.common.settings import setting

# the plot's drawing box (SVG user units); the SVG scales to the width of the page
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 320, 150, 34, 28, 12


def bars(points, width=WIDTH, height=HEIGHT):
    """Geometry of a bar chart: points [(label, value or None)] -> {bars, ticks, max}.

    Bars share the plot's width; a missing value (no data that week) draws no bar and is
    named in the bar's text. The scale's top is the largest value rounded up to a nice step.
    """
    values = [v for _, v in points if v is not None]
    top = nice_ceiling(max(values) if values else 1)
    inner_w, inner_h = width - LEFT - 4, height - BOTTOM - TOP
    step = inner_w / max(1, len(points))
    out = []
    for i, (label, value) in enumerate(points):
        h = 0 if value is None else inner_h * value / top
        out.append({"x": round(LEFT + i * step + step * 0.15, 1), "w": round(step * 0.7, 1),
                    "y": round(TOP + inner_h - h, 1), "h": round(h, 1), "label": label,
                    "value": value, "label_x": round(LEFT + i * step + step / 2, 1)})
    ticks = [{"y": round(TOP + inner_h - inner_h * f, 1), "value": round(top * f, 1)}
             for f in (0, 0.5, 1)]
    return {"bars": out, "ticks": ticks, "max": top, "axis_y": TOP + inner_h,
            "label_y": height - 10, "width": width, "height": height, "left": LEFT}


def nice_ceiling(value):
    """The smallest of 1, 2, 5 x 10^n at or above value (a readable top for an axis)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def short_week(iso_day):
    """'2026-11-23' -> '23/11'."""
    return f"{iso_day[8:10]}/{iso_day[5:7]}"


def procedure_view(code, slots, booking, partners=None):
    """One procedure's section of the page, from the services' figures (None: no answer);
    partners: this week's partner quotas and their use (requests' partner_figures, issue 24)."""
    s = (slots or {}).get("procedures", {}).get(code)
    b = (booking or {}).get("procedures", {}).get(code)
    weeks = sorted({w["week"] for w in (b or {}).get("weeks", [])} |
                   {w["week"] for w in (s or {}).get("weeks", [])})[-8:]
    wait_by_week = {w["week"]: w["median_wait_days"] for w in (b or {}).get("weeks", [])}
    full_by_week = {w["week"]: w["median_seconds_to_full"] for w in (s or {}).get("weeks", [])}
    return {
        "code": code,
        # label_fr, label_en, label_ar...: the template reads the page's language's
        **{key: text for key, text in labelled(code).items() if key.startswith("label_")},
        "days_to_next_free": s["days_to_next_free"] if s else None,
        "next_free": s["next_free"] if s else None,
        "released": s["released"] if s else None,
        "booked": s["booked"] if s else None,
        "median_seconds_to_full": s["median_seconds_to_full"] if s else None,
        "median_wait_days": b["median_wait_days"] if b else None,
        "trafficking_cancelled": b["trafficking_cancelled"] if b else None,
        "bookings": b["bookings"] if b else None,
        "partners": (partners or {}).get("procedures", {}).get(code),
        "wait_plot": bars([(short_week(w), wait_by_week.get(w)) for w in weeks]) if weeks else None,
        "speed_plot": bars([(short_week(w), None if full_by_week.get(w) is None
                             else round(full_by_week[w] / 60, 1)) for w in weeks])
        if any(full_by_week.get(w) is not None for w in weeks) else None,
    }


# issue 24: renewals are checked against the prefecture's register, first applications are
# not (e-mail confirmation, then M4 at the counter): their places are counted apart
KINDS = (("renewals", ("renewal", "renewal_10y"), "Renouvellements (vérifiés au registre des titres)",
          "Renewals (checked against the register of permits)"),
         ("first_applications", ("first_application",), "Premières demandes (sans titre à vérifier)",
          "First applications (no permit to check)"))


def by_kind(sections):
    """[{kind, label_fr, label_en, label_ar, released, booked}] summed over each kind's procedures; a
    figure no procedure of the kind answered is None."""
    rows = []
    for kind, codes, label_fr, label_en in KINDS:
        mine = [s for s in sections if s["code"] in codes]
        row = {"kind": kind, **{f"label_{lang}": i18n.translate(lang, label_fr, label_en)
                                for lang in i18n.LANGS}}
        for key in ("released", "booked"):
            values = [s[key] for s in mine if s[key] is not None]
            row[key] = sum(values) if values else None
        rows.append(row)
    return rows


def page(current, slots, booking, days, partners=None):
    """The page for this request (pages.Page: its language), the same for everyone in it;
    partners: this week's partner quotas and their use (issue 24)."""
    sections = [procedure_view(code, slots, booking, partners) for code in PROCEDURES]
    return current.render("fairness.html.j2", public=True, sections=sections, kinds=by_kind(sections),
                          notice=i18n.with_langs(FREE_NOTICE), days=days,
                          unavailable=slots is None or booking is None)


class FiguresCache(DependencyProvider):
    """The services' figures, kept FAIRNESS_CACHE_SECONDS per process (the same for all)."""

    def setup(self):
        config = self.container.config
        self.seconds = setting(config, "FAIRNESS_CACHE_SECONDS")
        self.days = 7 * setting(config, "FAIRNESS_WEEKS")
        self.value, self.until = None, 0.0

    def get_dependency(self, worker_ctx):
        return self

    def get(self, fetch):
        """The cached figures, or fetch() -> (slots, booking) when stale; a part that did not
        answer (None) is asked again at the next request, not kept."""
        now = time.monotonic()
        if self.value is None or now >= self.until:
            value = fetch()
            if None in value:
                return value
            self.value, self.until = value, now + self.seconds
        return self.value
