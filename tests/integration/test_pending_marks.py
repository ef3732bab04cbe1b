"""Marks written a moment late, in one update, against the embedded store."""
import pytest

from services.common.pending import PendingMarks, flush_all


@pytest.fixture
def collection(mongo):
    found = mongo("pending")["things"]
    found.insert_many([{"_id": f"t{i}", "sent": False} for i in range(5)])
    return found


def sent(collection):
    return sorted(d["_id"] for d in collection.find({"sent": True}))


def test_marks_land_on_flush_in_one_write(collection):
    marks = PendingMarks(collection, {"sent": True})
    marks.add("t1")
    marks.add("t3")
    assert sent(collection) == []
    assert marks.flush() == 2
    assert sent(collection) == ["t1", "t3"]
    assert marks.flush() == 0


def test_a_full_batch_is_written_at_once(collection):
    marks = PendingMarks(collection, {"sent": True}, max_batch=2)
    marks.add("t0")
    marks.add("t4")
    assert sent(collection) == ["t0", "t4"]


class Broken:
    def __init__(self, collection):
        self.collection, self.down = collection, True

    def update_many(self, *args):
        if self.down:
            raise ConnectionError("database down")
        return self.collection.update_many(*args)


def test_marks_that_could_not_be_written_wait_for_the_next_flush(collection):
    database = Broken(collection)
    marks = PendingMarks(database, {"sent": True})
    marks.add("t2")
    flush_all([marks])  # logged, not raised: the flusher keeps running
    marks.add("t0")
    assert marks.keys == ["t2", "t0"]
    database.down = False
    flush_all([marks])
    assert sent(collection) == ["t0", "t2"]
