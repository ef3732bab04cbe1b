# The two commands of the README: `make run` (whole system) and `make test` (whole suite).
# Both set up a fresh machine: virtualenv from pyproject.toml, RabbitMQ up with its
# management plugin, the embedded MongoDB stand-in when MONGO_URI is not set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml Makefile | sha1sum | cut -c1-12)
# the MongoDB stand-in, a separate server with dependencies of its own (see pyproject.toml)
MONGO_VENV ?= .venv-mongo
NX_27017 := nx-27017==0.8.1

.PHONY: run test install rabbitmq test-tools bench clean supervisor

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[embedded,test]'
	test -x $(MONGO_VENV)/bin/python || $(PYTHON) -m venv $(MONGO_VENV)
	$(MONGO_VENV)/bin/python -m pip install -q --disable-pip-version-check '$(NX_27017)'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

rabbitmq:
	bash deploy/ensure_rabbitmq.sh

run: install rabbitmq
	$(PY) -m deploy.run

# the first staff supervisor (no default account exists): `make supervisor USERNAME=alice`,
# with `make run` going; asks for the password (or reads it from stdin)
supervisor: install
	MONGO_URI=$${MONGO_URI:-mongodb://127.0.0.1:27021} $(PY) -m gateway.admin.accounts \
		create-supervisor --username "$(USERNAME)" $(if $(SITE),--site $(SITE))

# Debian's chromium (browser tests), nginx (the reverse proxy's own config check and a run in
# front of the gateway) and docker-compose (`config -q` checks the compose file), when missing
test-tools:
	bash deploy/ensure_test_tools.sh

test: install rabbitmq test-tools
	$(VENV)/bin/nameko test -q -p no:randomly $(PYTEST_ARGS)

# needs `make run` in another terminal
bench: install
	$(PY) tests/bench/booking_burst.py

clean:
	rm -rf $(VENV) $(MONGO_VENV) var
