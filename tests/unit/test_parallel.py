"""The shards of `make test` (tests/parallel.py and the conftest hook): every file in exactly one
shard, balanced by measured durations (a folder's guess for a file not measured yet), the record
of durations updated, and the closing line adding up every shard's counts."""
import json

from tests.conftest import file_weights, measured_durations, shard_of_files
import subprocess
import sys
import textwrap

from tests.parallel import ROOT, excusable, failed_tests, merged_durations, summary_counts


def test_each_file_goes_to_one_shard_heaviest_first_to_the_lightest():
    weights = {"e2e/a.py": 50, "e2e/b.py": 40, "i/c.py": 30, "i/d.py": 20, "u/e.py": 1}
    shards = shard_of_files(weights, 2)
    assert set(shards) == set(weights)
    loads = [sum(w for f, w in weights.items() if shards[f] == s) for s in (0, 1)]
    assert sorted(loads) == [70, 71]
    # every shard process computes the same split from the same collection
    assert shard_of_files(dict(reversed(list(weights.items()))), 2) == shards


def test_more_shards_than_files_leaves_some_empty():
    assert sorted(shard_of_files({"a.py": 1, "b.py": 1}, 4).values()) == [0, 1]


def test_closing_line_counts_are_read_whatever_comes_after_them():
    output = "....F.\n=== short test summary ===\nFAILED x\n2 failed, 40 passed, 3 skipped, 1 error in 12.3s\n"
    assert summary_counts(output) == {"failed": 2, "passed": 40, "skipped": 3, "errors": 1}
    assert summary_counts("collected 0 items\n\nno tests ran in 0.01s\n") == {}
    assert summary_counts("12 passed, 300 deselected in 4.0s") == {"passed": 12, "deselected": 300}


def test_a_measured_file_weighs_its_seconds_an_unmeasured_one_its_folders_guess():
    files = (["tests/e2e/test_run.py"] * 2 + ["tests/unit/test_a.py"] * 100
             + ["tests/integration/test_b.py"] * 3 + ["tests/test_deploy.py"])
    weights = file_weights(files, {"tests/e2e/test_run.py": 12.5, "tests/gone.py": 99})
    assert weights == {"tests/e2e/test_run.py": 12.5, "tests/unit/test_a.py": 5.0,
                       "tests/integration/test_b.py": 9.0, "tests/test_deploy.py": 0.5}


def test_shards_balance_on_measured_durations_rather_than_folders():
    # by folder, the three end-to-end files would weigh alike; measured, one is most of the run
    files = ["tests/e2e/slow.py", "tests/e2e/quick.py", "tests/e2e/quicker.py",
             "tests/integration/test_c.py"]
    measured = {"tests/e2e/slow.py": 200.0, "tests/e2e/quick.py": 20.0,
                "tests/e2e/quicker.py": 10.0, "tests/integration/test_c.py": 60.0}
    shards = shard_of_files(file_weights(files, measured), 2)
    assert {f for f in files if shards[f] == shards["tests/e2e/slow.py"]} == {"tests/e2e/slow.py"}
    by_folder = shard_of_files(file_weights(files, {}), 2)
    assert [by_folder[f] for f in files[:3]].count(by_folder["tests/e2e/slow.py"]) == 2


def test_the_record_is_read_leniently_and_updated_file_by_file(tmp_path):
    record = tmp_path / "durations.json"
    assert measured_durations(record) == {}  # none yet: the folders' guesses
    record.write_text("{not json")
    assert measured_durations(record) == {}
    record.write_text(json.dumps({"tests/a.py": 3, "tests/b.py": "x"}))
    assert measured_durations(record) == {"tests/a.py": 3.0}
    # a run of some files keeps the others' record
    merged = merged_durations({"tests/b.py": 4.0, "tests/a.py": 3.0}, {"tests/c.py": 1.234,
                                                                     "tests/a.py": 7.06})
    assert merged == {"tests/a.py": 7.1, "tests/b.py": 4.0, "tests/c.py": 1.2}
    assert list(merged) == sorted(merged)


def test_the_failed_tests_are_read_from_the_short_summary_once_each():
    output = textwrap.dedent("""\
        ....F.E
        ===== short test summary info =====
        FAILED tests/a.py::test_x[viewport0-desk] - AssertionError: assert '' == 'username'
        ERROR tests/b.py::test_y - TimeoutError
        FAILED tests/a.py::test_x[viewport0-desk] - again
        1 failed, 5 passed, 1 error in 3.0s
        """)
    assert failed_tests(output) == ["tests/a.py::test_x[viewport0-desk]", "tests/b.py::test_y"]
    assert failed_tests("12 passed in 1.0s") == []


def run_suite(tmp_path, body):
    test = tmp_path / "test_once.py"
    test.write_text(textwrap.dedent(body))
    env = {"PATH": "/usr/bin:/bin", "TEST_JOBS": "2", "MARKER": str(tmp_path / "marker"),
           "HOME": str(tmp_path), "TEST_FLAKY_LOG": str(tmp_path / "flaky.log")}
    return subprocess.run([sys.executable, "-m", "tests.parallel", "-q", "-p", "no:randomly",
                           "-p", "no:cacheprovider", str(test)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_test_failing_once_passes_the_run_and_is_named_flaky_one_failing_twice_fails_it(tmp_path):
    once = run_suite(tmp_path, """\
        import os
        def test_fails_the_first_time():
            first = not os.path.exists(os.environ["MARKER"])
            open(os.environ["MARKER"], "a").close()
            assert not first
        """)
    # both shards run a file outside tests/: one of them was first, and failed
    assert once.returncode == 0, once.stdout[-3000:]
    assert "FLAKY" in once.stdout
    assert "test_once.py::test_fails_the_first_time" in (tmp_path / "flaky.log").read_text()
    always = run_suite(tmp_path, """\
        def test_always_fails():
            assert False
        """)
    assert always.returncode == 1
    assert "FLAKY" not in always.stdout and "second run" in always.stdout


def test_only_a_shard_that_ran_everything_and_named_each_failure_is_excused():
    named = ["tests/a.py::test_x"]
    ran = "F....\nFAILED tests/a.py::test_x - assert\n1 failed, 4 passed in 2.0s\n"
    assert excusable(1, ran, named)
    # stopped early (-x), interrupted, crashed, or an internal error: what did not run is unknown
    assert not excusable(1, "F\n!!! stopping after 1 failures !!!\n" + ran, named)
    assert not excusable(2, "!!! Interrupted: 1 error during collection !!!\n" + ran, named)
    assert not excusable(-9, ran, named)
    assert not excusable(3, ran, named)
    # a test failing and erroring at teardown: two counted, one named
    both = ("FAILED tests/a.py::test_x - assert\nERROR tests/a.py::test_x - teardown\n"
            "1 failed, 4 passed, 1 error in 2.0s\n")
    assert not excusable(1, both, failed_tests(both))
    assert not excusable(1, ran, [])


def test_a_test_hanging_once_is_run_again_and_the_tests_its_shard_never_reached_are_run(tmp_path):
    hung = run_suite(tmp_path, """\
        import os, time, pytest
        @pytest.mark.timeout(3)
        def test_hangs_the_first_time():
            first = not os.path.exists(os.environ["MARKER"])
            open(os.environ["MARKER"], "a").close()
            if first:
                time.sleep(60)
        def test_after_it():
            open(os.environ["MARKER"] + "-after", "a").close()
        """)
    assert "Timeout" in hung.stdout
    assert hung.returncode == 0, hung.stdout[-3000:]
    assert "FLAKY" in hung.stdout and "test_hangs_the_first_time" in (tmp_path / "flaky.log").read_text()
    # the shard that hung never ran the second test: the second run did
    assert "never ran" in hung.stdout and (tmp_path / "marker-after").exists()
