# The two commands of the README: `make run` (whole system) and `make test` (whole suite).
# Both set up a fresh machine: virtualenv from pyproject.toml, RabbitMQ up with its
# management plugin, the embedded MongoDB stand-in when MONGO_URI is not set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test install rabbitmq bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[embedded,test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

rabbitmq:
	bash deploy/ensure_rabbitmq.sh

run: install rabbitmq
	$(PY) -m deploy.run

test: install rabbitmq
	$(VENV)/bin/nameko test -q -p no:randomly $(PYTEST_ARGS)

# needs `make run` in another terminal
bench: install
	$(PY) tests/bench/booking_burst.py

clean:
	rm -rf $(VENV) var
