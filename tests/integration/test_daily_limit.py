"""Per-day counters (services/common/daily_limit.py) on the real store: concurrent takers never
pass the limit, a retried take counts once, and take_all counts all or nothing."""
from datetime import datetime, timezone

import eventlet

from services.common.daily_limit import DailyLimit, day_key

NOW = datetime(2027, 1, 4, 9, tzinfo=timezone.utc)


def test_concurrent_takers_never_pass_the_limit(mongo):
    limits = DailyLimit(mongo("notify")["mail_days"])
    limits.ensure_indexes()
    key = day_key("mail:victim@example.org", NOW)
    pool = eventlet.GreenPool(20)
    taken = list(pool.imap(lambda n: limits.take(key, 5, NOW, token=f"m{n}"), range(20)))
    assert taken.count(True) == 5 and limits.used(key) == 5


def test_the_same_token_counts_once_and_can_be_given_back(mongo):
    limits = DailyLimit(mongo("notify")["mail_days"])
    key = day_key("mail:victim@example.org", NOW)
    assert limits.take(key, 2, NOW, token="event-1:confirmation")
    # the same message handled again (a retry after a crash): allowed, not counted again
    assert limits.take(key, 2, NOW, token="event-1:confirmation") and limits.used(key) == 1
    assert limits.take(key, 2, NOW, token="event-2:confirmation")
    assert not limits.take(key, 2, NOW, token="event-3:confirmation")
    assert limits.take(key, 2, NOW, token="event-1:confirmation")  # still one of the two
    limits.give_back(key, "event-2:confirmation")
    assert limits.used(key) == 1 and limits.take(key, 2, NOW, token="event-3:confirmation")
    # another day is another counter
    assert limits.take(day_key("mail:victim@example.org", datetime(2027, 1, 5, 9, tzinfo=timezone.utc)),
                       2, NOW, token="event-4:confirmation")


def test_take_all_counts_under_every_key_or_none(mongo):
    limits = DailyLimit(mongo("booking")["attempt_days"])
    person, mailbox = day_key("agdref:0612345678", NOW), day_key("email:a@example.org", NOW)
    assert limits.take_all([(person, 3), (mailbox, 1)], NOW, token="ATT-0000-0001")
    # the mailbox is full: the person's counter is not charged for the refused attempt
    assert not limits.take_all([(person, 3), (mailbox, 1)], NOW, token="ATT-0000-0002")
    assert limits.used(person) == 1 and limits.used(mailbox) == 1
