"""The admin database: staff accounts, their sessions, and the append-only audit log.

Times are epoch seconds (`*_ts`): numbers in `$set` and `$inc` behave the same on MongoDB and
on the embedded stand-in. Sessions are stored under a hash of their id, so reading the
database does not give anyone a session. The audit log has no update or delete here: the
application can only append to it and read it.
"""
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError


class AccountExists(Exception):
    pass


class AdminStore:
    def __init__(self, db):
        self.accounts = db["accounts"]
        self.sessions = db["sessions"]
        self.audit = db["audit"]

    def ensure_indexes(self):
        self.sessions.create_index([("username", ASCENDING)])
        self.sessions.create_index([("expires_ts", ASCENDING)])
        self.audit.create_index([("at_ts", DESCENDING)])
        self.audit.create_index([("who", ASCENDING), ("at_ts", DESCENDING)])
        self.audit.create_index([("object", ASCENDING), ("at_ts", DESCENDING)])

    # -- accounts ----------------------------------------------------------------------------

    def create_account(self, account):
        try:
            self.accounts.insert_one(account)
        except DuplicateKeyError:
            raise AccountExists(account["_id"]) from None

    def account(self, username):
        return self.accounts.find_one({"_id": username})

    def all_accounts(self, limit=500):
        return list(self.accounts.find({}, {"password_hash": 0}).sort("_id", ASCENDING).limit(limit))

    def count_accounts(self):
        return self.accounts.estimated_document_count()

    def record_failure(self, username, now_ts):
        """One more failed login; the account after (None when there is no such account)."""
        return self.accounts.find_one_and_update(
            {"_id": username}, {"$inc": {"failed_logins": 1}, "$set": {"last_failure_ts": now_ts}},
            return_document=ReturnDocument.AFTER)

    def lock(self, username, until_ts):
        self.accounts.update_one({"_id": username},
                                 {"$set": {"locked_until_ts": until_ts, "failed_logins": 0}})

    def unlock(self, username):
        return self.accounts.find_one_and_update(
            {"_id": username}, {"$set": {"locked_until_ts": 0, "failed_logins": 0}},
            return_document=ReturnDocument.AFTER)

    def reset_failures(self, username):
        self.accounts.update_one({"_id": username}, {"$set": {"failed_logins": 0}})

    def reset_password(self, username, password_hash):
        """A supervisor's reset: a temporary password, to be replaced at the next log-in."""
        self.accounts.update_one({"_id": username}, {"$set": {
            "password_hash": password_hash, "must_change_password": True, "failed_logins": 0,
            "locked_until_ts": 0}})

    def set_new_password(self, username, password_hash, session_key):
        """The person's own new password; their current session may do everything again."""
        self.accounts.update_one({"_id": username}, {"$set": {
            "password_hash": password_hash, "must_change_password": False}})
        self.sessions.update_one({"_id": session_key}, {"$set": {"must_change_password": False}})

    def set_password_hash(self, username, password_hash):
        self.accounts.update_one({"_id": username}, {"$set": {"password_hash": password_hash}})

    # -- sessions ----------------------------------------------------------------------------

    def add_session(self, session):
        self.sessions.insert_one(session)

    def session(self, key):
        return self.sessions.find_one({"_id": key})

    def end_session(self, key):
        self.sessions.delete_one({"_id": key})

    def end_sessions_of(self, username):
        self.sessions.delete_many({"username": username})

    # -- audit: append and read, nothing else --------------------------------------------------

    def append_audit(self, entry):
        self.audit.insert_one(entry)

    def find_audit(self, who=None, obj=None, since_ts=None, until_ts=None, limit=500):
        query = {}
        if who:
            query["who"] = who
        if obj:
            query["object"] = obj
        if since_ts is not None:
            query["at_ts"] = {"$gte": since_ts, "$lt": until_ts}
        return list(self.audit.find(query).sort("at_ts", DESCENDING).limit(limit))
