"""M5: everyone is reminded that appointments are free and that offers to sell them must be
refused and reported.

`FREE_NOTICE` is the `notice` of every answer of the public API about a booking, a request or
an attempt, and the one the printed convocation, the attestation and the fairness page show
(services/common/reference_data.py passes it on to the callers that take it from there).
The same warning leads every e-mail (services/notify/templates/_warning.txt.j2 and
_warning.html.j2, with the REPORT_URL and REPORT_EMAIL settings) and tops every public page
(gateway/public/templates/_layout.html.j2): those word it in their templates' t(fr, en), which
the translation catalogue reads.
"""

FREE_NOTICE = {
    "fr": "Les rendez-vous de la préfecture sont gratuits. Personne n'a le droit de les vendre : "
          "refusez toute offre payante et signalez-la à la préfecture.",
    "en": "Appointments at the prefecture are free. Nobody may sell them: refuse any offer "
          "to buy one and report it to the prefecture.",
}
