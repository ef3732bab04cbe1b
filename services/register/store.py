"""The register database: the current permits and the long-stay visas, each imported whole,
and the invitations sent.

An import never changes the register in place. Its entries are written under a new
generation, then one conditional update of the `current` pointer makes them the register
(compare-and-set on the generation the import was diffed against): readers see the old
register or the new one, never half of one, and of two imports made side by side from the
same register only one is applied (the other is told to look again). The previous
generation is then deleted; one written by an import that crashed before its switch is
never read. Permits and visas are two books kept the same way (`Generations`): their entries
in collections of their own, their pointers side by side in `state`.

An invitation is one document per permit (its id derived from the foreigner number and the
expiry): inserted once, whatever the passes, instances or re-imports, and its event rides on
it through the outbox.
"""
from pymongo.errors import DuplicateKeyError

from services.common.lease import Leases
from services.common.outbox import Outbox
from services.common.retention import Watermark, erase_windowed, erasure
from services.register.rules import ENTRY_FIELDS as PERMIT_FIELDS, VISA_FIELDS

CURRENT = "current"  # the permits' pointer (its id from before the visas)
VISAS = "visas"
CHUNK = 500  # entries written per insert
# what the erasure of an invitation REQUEST_RETENTION_DAYS after it was sent blanks
# (services/common/retention.py): who it was for; its id (one per permit: never sent twice),
# procedure, expiry, time and token hash stay
INVITATION_ERASED = {"number": None, "email": None, "family_name": None, "given_names": None}


class SwitchRefused(Exception):
    """Another import was applied since this one read the register."""


class Generations:
    """One book of the register, imported whole: its entries by generation, the pointer to
    the one in force, and the record of its imports."""

    def __init__(self, pointer, entries, imports, pointer_id, fields):
        self.pointer, self.entries, self.imports = pointer, entries, imports
        self.pointer_id, self.fields = pointer_id, fields

    def ensure_indexes(self):
        self.entries.create_index([("generation", 1), ("match", 1)])
        self.imports.create_index([("at_ts", -1)])

    def current(self):
        """{generation, at_ts, by, count} of the book in force, or None before any import."""
        return self.pointer.find_one({"_id": self.pointer_id})

    def current_entries(self, generation):
        """{key (foreigner or visa number): entry} of a generation."""
        if generation is None:
            return {}
        return {doc["number"]: {k: doc.get(k) for k in self.fields}
                for doc in self.entries.find({"generation": generation})}

    def write_generation(self, generation, docs):
        for start in range(0, len(docs), CHUNK):
            self.entries.insert_many(docs[start:start + CHUNK], ordered=False)

    def drop_generation(self, generation):
        self.entries.delete_many({"generation": generation})

    def switch(self, base, record):
        """Make `record["generation"]` the book in force if `base` is still the one in force."""
        if base is None:
            try:
                self.pointer.insert_one(dict(record, _id=self.pointer_id))
                return
            except DuplicateKeyError:
                raise SwitchRefused()
        switched = self.pointer.find_one_and_update({"_id": self.pointer_id, "generation": base},
                                                    {"$set": record})
        if switched is None:
            raise SwitchRefused()

    def record_import(self, record):
        self.imports.insert_one(record)

    def recent_imports(self, limit):
        return list(self.imports.find().sort("at_ts", -1).limit(limit))

    def find_match(self, generation, digest):
        return self.entries.find_one({"generation": generation, "match": digest})

    def find_number(self, generation, number):
        return self.entries.find_one({"generation": generation, "number": number})


class RegisterStore(Generations):
    """The permits' book (the methods above, on `entries`), the visas' (`visas`), and the
    invitations."""

    def __init__(self, db):
        super().__init__(db["state"], db["entries"], db["imports"], CURRENT, PERMIT_FIELDS)
        self.visas = Generations(db["state"], db["visas"], db["visa_imports"], VISAS, VISA_FIELDS)
        self.invitations = db["invitations"]
        self.leases = Leases(db["leases"])
        self.invitation_outbox = Outbox(self.invitations, ("sent",))
        self.pending = self.invitation_outbox.pending
        self.retention_marks = Watermark(db["retention_marks"])

    def ensure_indexes(self):
        super().ensure_indexes()
        self.entries.create_index([("generation", 1), ("expiry", 1)])
        self.visas.ensure_indexes()
        self.invitation_outbox.ensure_indexes()
        self.invitations.create_index([("at_ts", 1)])  # their erasure

    def in_window(self, generation, first, last):
        return [(d["number"], d) for d in self.entries.find(
            {"generation": generation, "expiry": {"$gte": first, "$lte": last}})]

    # -- invitations --------------------------------------------------------------------------

    def invited(self, ids):
        return {d["_id"] for d in self.invitations.find({"_id": {"$in": list(ids)}}, {"_id": 1})}

    def add_invitation(self, doc):
        """True when inserted; False when this permit was invited already."""
        try:
            self.invitations.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def erase_invitations(self, before_ts, now_ts, limit):
        """Erase who the invitations sent before `before_ts` were for (their event sent), at
        most `limit`: how many. Its link then opens nothing (no number to look up)."""
        return erase_windowed(self.invitations, self.retention_marks, "invitations",
                              [({}, "at_ts")], before_ts, erasure(INVITATION_ERASED, now_ts), limit)

    def get_invitation(self, invitation_id):
        return self.invitations.find_one({"_id": invitation_id})

    def count_invitations(self):
        return self.invitations.count_documents({})

