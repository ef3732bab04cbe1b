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

.PHONY: run test install rabbitmq test-tools bench clean supervisor messages

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(MONGO_VENV)/bin/python || $(PYTHON) -m venv $(MONGO_VENV)
	# both installs at once: on a fresh clone each mostly waits on the package index
	$(MONGO_VENV)/bin/python -m pip install -q --disable-pip-version-check '$(NX_27017)' & stand_in=$$!; \
	$(PY) -m pip install -q --disable-pip-version-check -e '.[embedded,test]'; main=$$?; \
	wait $$stand_in && exit $$main
	rm -f $(VENV)/.installed-*
	touch $@

# the State design system (DSFR) for the public pages: the version pinned in package-lock.json,
# copied under gateway/public/static/dsfr/ (git-ignored) by deploy/dsfr_assets.py
DSFR := gateway/public/static/dsfr/.installed-$(shell cat package-lock.json deploy/dsfr_assets.py | sha1sum | cut -c1-12)

$(DSFR): package.json package-lock.json deploy/dsfr_assets.py
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) deploy/dsfr_assets.py
	touch $@

install: $(STAMP) $(DSFR)

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

# TEST_JOBS shards side by side (tests/parallel.py; TEST_JOBS=1 for one plain `nameko test`);
# byte-code cached even where the environment says not to: the suite starts hundreds of Python
# processes, each would compile the project (and pytest rewrite its asserts) again
test: install rabbitmq test-tools
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m tests.parallel -q -p no:randomly $(PYTEST_ARGS)

# needs `make run` in another terminal
bench: install
	$(PY) tests/bench/booking_burst.py

# the texts applicants read (every t(fr, en) of the pages and e-mails, issue 21) into
# services/common/locale/: messages.pot, and each language's messages.po to translate
messages: install
	$(PY) -m deploy.messages

clean:
	rm -rf $(VENV) $(MONGO_VENV) var node_modules gateway/public/static/dsfr
