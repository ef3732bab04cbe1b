"""Public gateway: the JSON API applicants use (DESIGN.md section 6)."""
from werkzeug.wrappers import Response

from gateway.http import json_http, read_json
from gateway.public import convocation, fairness, pages
from gateway.public.client import TrustedProxies, client_of
from gateway.public.full_slots import FullSlots
from gateway.readiness import gather, ready_answer
from gateway.public.schemas import BookingAccessSchema, SlotQuerySchema
from services.common.errors import DomainError, InvalidRequest, ServiceUnavailable, SlotFull
from services.common.reference_data import FREE_NOTICE, PROCEDURES, SITES, procedure_view
from services.common.logs import CallIdLogging
from services.common.metrics import Metrics
from services.common.rpc import BoundedRpcProxy
from services.common.schemas import BookingRequestSchema, load_or_raise

TOKEN_HEADER = "X-Booking-Token"
# built once: a marshmallow Schema costs more to build than to load a request with
SLOT_QUERY, BOOKING_REQUEST, BOOKING_ACCESS = SlotQuerySchema(), BookingRequestSchema(), BookingAccessSchema()


def _walk_in(procedure):
    return PROCEDURES[procedure].get("walk_in")


class PublicGateway:
    name = "public_gateway"

    slots = BoundedRpcProxy("slots")
    booking = BoundedRpcProxy("booking")
    trusted_proxies = TrustedProxies()
    full_slots = FullSlots()
    metrics = Metrics()
    log_context = CallIdLogging()
    figures_cache = fairness.FiguresCache()
    slots_health = BoundedRpcProxy("slots", timeout_key="HEALTH_RPC_TIMEOUT", timeout_default=2.0)
    booking_health = BoundedRpcProxy("booking", timeout_key="HEALTH_RPC_TIMEOUT", timeout_default=2.0)

    @json_http("GET", "/health")
    def health(self, request):
        return {"status": "ok"}

    @json_http("GET", "/ready")
    def ready(self, request):
        """200 when the broker carries calls and slots and booking answer their health RPC."""
        return ready_answer(self._health())

    @json_http("GET", "/metrics")
    def metrics_page(self, request):
        """Prometheus text format (the reverse proxy keeps it off the internet)."""
        self.metrics.set_health(self._health())
        return self.metrics.response()

    @json_http("GET", "/fairness")
    def fairness_page(self, request):
        """Public figures per procedure (gateway/public/fairness.py); no personal data."""
        slots, booking = self.figures_cache.get(self._figures)
        return fairness.page(slots, booking, self.figures_cache.days)

    @json_http("GET", "/static/public.css")
    def stylesheet(self, request):
        return fairness.css()

    def _health(self):
        return gather({"slots": self.slots_health, "booking": self.booking_health})

    def _figures(self):
        days = self.figures_cache.days

        def ask(call):
            try:
                return call()
            except DomainError:
                return None
        return ask(lambda: self.slots.figures(days)), ask(lambda: self.booking.figures(days))

    @json_http("GET", "/api/procedures")
    def procedures(self, request):
        return {"procedures": [procedure_view(code) for code in PROCEDURES],
                "notice": FREE_NOTICE}

    @json_http("GET", "/api/slots")
    def list_slots(self, request):
        query = load_or_raise(SLOT_QUERY, request.args.to_dict(), InvalidRequest)
        # the JSON API shows decoys like any slot (a script reading it can book one, a
        # person using the pages never sees one); only named fields go out, none tells
        found = self.slots.list_open(
            query["procedure"], query["from_"].isoformat(), query["to"].isoformat(),
            query["page"], query["per_page"], include_decoys=True,
        )
        answer = {
            "slots": [
                {key: slot[key] for key in ("id", "site", "procedure", "start", "end", "free")}
                for slot in found["slots"]
            ],
            "page": found["page"],
            "per_page": found["per_page"],
            "has_more": found["has_more"],
            "notice": FREE_NOTICE,
        }
        if _walk_in(query["procedure"]):
            answer["walk_in"] = _walk_in(query["procedure"])
        return answer

    # private: these answers carry the applicant's name, birth date and token
    @json_http("POST", "/api/bookings", private=True)
    def create_booking(self, request):
        body = read_json(request)
        # validated here to answer 400 without a round trip; the booking service checks again
        load_or_raise(BOOKING_REQUEST, body, InvalidRequest)
        if self.full_slots.recently_full(body["slot_id"]):
            raise SlotFull()
        client = client_of(request, self.trusted_proxies)
        try:
            created = self.booking.create(body, client)
        except SlotFull:
            self.full_slots.remember(body["slot_id"])
            raise
        except ServiceUnavailable:
            # true however late the booking service gets to it: a request whose caller gave up
            # is dropped, and none is stored after its deadline (services/common/rpc.py)
            raise ServiceUnavailable("The booking was not made. Please try again in a moment.")
        if created.get("slot_full"):
            # learnt from the winner of the last place, not from the first loser: the
            # attempts already queued behind it get their 409 here
            self.full_slots.remember(body["slot_id"])
        slot = created["slot"]
        answer = {
            "reference": created["reference"],
            "token": created["token"],
            "status": created["status"],
            # pending until the owner of the mailbox confirms: say so, in both languages
            "not_final": created["not_final"],
            "confirm_by": created.get("confirm_by"),
            "slot": dict(slot, site_address=SITES.get(slot["site"], {}).get("address")),
            "notice": FREE_NOTICE,
        }
        if _walk_in(slot["procedure"]):
            answer["walk_in"] = _walk_in(slot["procedure"])
        return 201, answer

    @json_http("GET", "/api/bookings/<reference>", private=True)
    def get_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.get(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("POST", "/api/bookings/<reference>/confirm", private=True)
    def confirm_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.confirm(access["reference"], access["token"]), notice=FREE_NOTICE)

    @json_http("DELETE", "/api/bookings/<reference>", private=True)
    def cancel_booking(self, request, reference):
        access = self._access(request, reference)
        return dict(self.booking.cancel(access["reference"], access["token"]), notice=FREE_NOTICE)

    # pages reached from the links in e-mails

    @json_http("GET", "/bookings/<reference>")
    def booking_page(self, request, reference):
        try:
            access = self._access(request, reference)
            return pages.booking_page(self.booking.get(access["reference"], access["token"]),
                                      access["token"])
        except DomainError as error:
            return pages.error_page(error)

    # the confirmation link in the e-mail: GET only shows the page (a mail client or a scanner
    # fetching the link ahead must not confirm); its button POSTs
    @json_http("GET", "/bookings/<reference>/confirm")
    def confirm_page(self, request, reference):
        try:
            access = self._access(request, reference)
            return pages.booking_page(self.booking.get(access["reference"], access["token"]),
                                      access["token"], ask_confirmation=True)
        except DomainError as error:
            return pages.error_page(error)

    @json_http("POST", "/bookings/<reference>/confirm")
    def confirm_form(self, request, reference):
        try:
            access = load_or_raise(BOOKING_ACCESS, {"reference": reference,
                                                    "token": request.form.get("token", "")},
                                   InvalidRequest)
            booking = self.booking.confirm(access["reference"], access["token"])
            return pages.booking_page(booking, access["token"],
                                      just_confirmed=booking["status"] == "active")
        except DomainError as error:
            return pages.error_page(error)

    @json_http("POST", "/bookings/<reference>/cancel")
    def cancel_page(self, request, reference):
        try:
            access = load_or_raise(BOOKING_ACCESS, {"reference": reference,
                                                    "token": request.form.get("token", "")},
                                   InvalidRequest)
            booking = self.booking.cancel(access["reference"], access["token"])
            return pages.booking_page(booking, access["token"], just_cancelled=True)
        except DomainError as error:
            return pages.error_page(error)

    @json_http("GET", "/bookings/<reference>/convocation")
    def convocation_page(self, request, reference):
        """The convocation to print (HTML), for the holder of the booking's token."""
        try:
            access = self._access(request, reference)
            return convocation.html(self.booking.convocation(access["reference"], access["token"]))
        except DomainError as error:
            return pages.error_page(error)

    @json_http("GET", "/bookings/<reference>/convocation.pdf")
    def convocation_pdf(self, request, reference):
        access = self._access(request, reference)
        body = convocation.pdf(self.booking.convocation(access["reference"], access["token"]))
        return Response(body, content_type="application/pdf", headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="convocation-{access["reference"]}.pdf"'})

    def _access(self, request, reference):
        token = request.headers.get(TOKEN_HEADER) or request.args.get("token") or ""
        return load_or_raise(BOOKING_ACCESS, {"reference": reference, "token": token},
                             InvalidRequest)
