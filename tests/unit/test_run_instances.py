"""RUN_INSTANCES (issue 23): which processes `make run` starts, on which ports, and the nginx
configuration that balances over the public gateways (deploy/run.py, deploy/proxy.py). The
processes themselves, killed one of each, are tests/e2e/test_instances.py's."""
import re

import pytest

from deploy import proxy, run


def test_one_instance_is_the_run_as_before():
    assert [label for label, _, _ in run.instances({})] == list(run.PROCESSES)
    assert [what for what, *_ in run.wanted_ports({"MONGO_URI": "x", "SMTP_HOST": "y"})] == [
        "the public gateway", "the staff gateway"]


def test_two_instances_each_with_a_label_and_the_gateways_on_ports_of_their_own():
    env = {"RUN_INSTANCES": "2", "RUN_GATEWAY_PORT": "9100", "WEB_SERVER_ADDRESS": "0.0.0.0:8000"}
    found = run.instances(env)
    labels = [label for label, _, _ in found]
    for name in ("slots", "booking", "notify", "fraud", "requests", "public_gateway"):
        assert f"{name}.1" in labels and f"{name}.2" in labels and name not in labels
    assert labels.count("admin_gateway") == 1  # the staff gateway stays one
    assert run.gateway_instance_addresses(env) == ["127.0.0.1:9100", "127.0.0.1:9101"]
    wanted = {(what, port) for what, _, port, _ in run.wanted_ports(dict(env, MONGO_URI="x",
                                                                         SMTP_HOST="y"))}
    assert ("the reverse proxy (nginx)", 8000) in wanted
    assert {("a public gateway instance", 9100), ("a public gateway instance", 9101)} <= wanted


@pytest.mark.parametrize("value", ["0", "two", "-1", "10", "1.5"])
def test_a_wrong_count_is_refused(value):
    with pytest.raises(ValueError, match="RUN_INSTANCES"):
        run.instances({"RUN_INSTANCES": value})


def test_nginx_balances_over_every_gateway_and_replays_no_post():
    text = proxy.render({"PUBLIC_GATEWAY": "127.0.0.1:9100,127.0.0.1:9101"})
    upstream = re.search(r"upstream public_gateway \{(.*?)\}", text, re.S).group(1)
    assert re.findall(r"server (\S+) max_fails", upstream) == ["127.0.0.1:9100", "127.0.0.1:9101"]
    retry = re.search(r"^\s*proxy_next_upstream (.*);", text, re.M).group(1).split()
    # a POST that reached a gateway is never passed to another (nginx's default without
    # `non_idempotent`): the booking it may have made is found again by its Idempotency-Key
    assert "non_idempotent" not in retry and set(retry) <= {"error", "timeout"}
    # compose: one name, its replicas resolved by Docker's DNS
    single = proxy.render()
    assert re.findall(r"server (\S+) max_fails", single) == ["public_gateway:8000"]
