# wangge: `make run` serves the Guiyang demo, `make test` runs the suite.
# Both install what they need: the venv, Python packages, PostgreSQL + PostGIS from apt.
# DATABASE_URL=postgresql://... uses an existing PostGIS instead of the local cluster.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES ?= postgresql postgresql-contrib postgis gdal-bin chromium fonts-wqy-microhei

.PHONY: run test fuzz stop db migrate demo postgis venv bench lint clean

run: db migrate demo
	@echo ""
	@echo "  wangge:   http://$(HOST):$(PORT)/"
	@echo "  API docs: http://$(HOST):$(PORT)/docs"
	@echo "  health:   http://$(HOST):$(PORT)/health"
	@echo ""
	$(BIN)/wangge serve --host $(HOST) --port $(PORT)

test: db
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Schemathesis with every check against every operation (the fuzz test of `make test`, run
# longer: FUZZ_EXAMPLES per operation, slow operations unbounded, the same fixed seed).
FUZZ_EXAMPLES ?= 100
fuzz: db
	WANGGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/service/test_fuzz_openapi.py $(PYTEST_ARGS)

stop: venv
	-$(BIN)/wangge db stop

db: venv postgis
	$(BIN)/wangge db start

migrate: db
	$(BIN)/wangge migrate

demo: migrate
	$(BIN)/wangge demo

# Every benchmark runs to its end; exits non-zero at the end when any missed a goal or failed a
# check. BENCH_ARGS="--quick" for small sizes, or name some: BENCH_ARGS="lookup tiles".
bench: db
	@command -v wrk >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	@command -v pgbench >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql-client; }
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check geo service maps fixtures tests bench

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3 python3-venv; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[test]'
	touch $@

# PostGIS is needed only for the local cluster; with DATABASE_URL the server is yours.
postgis:
	@if [ -n "$$DATABASE_URL" ]; then exit 0; fi; \
	if ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 \
	   && ls /usr/share/postgresql/*/extension/pgrouting.control >/dev/null 2>&1 \
	   && command -v ogrinfo >/dev/null && command -v chromium >/dev/null; then exit 0; fi; \
	echo "installing PostgreSQL + PostGIS + pgRouting from apt"; \
	$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $(APT_PACKAGES); \
	for v in $$(ls /usr/lib/postgresql); do \
	  [ -f /usr/share/postgresql/$$v/extension/postgis.control ] || \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-$$v-postgis-3; \
	  [ -f /usr/share/postgresql/$$v/extension/pgrouting.control ] || \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-$$v-pgrouting; \
	done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
