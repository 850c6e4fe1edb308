# Every target runs the set-up first when needed (scripts/setup.sh is idempotent and quick when
# everything is already there).
PY := .venv/bin/python
SETUP_STAMP := .venv/.setup-stamp

.PHONY: setup demo test package bench clean

setup:
	bash scripts/setup.sh

$(SETUP_STAMP): requirements.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: $(SETUP_STAMP)
	$(PY) -m sar_cloud_removal.cli.demo --out demo_output

test: $(SETUP_STAMP)
	$(PY) -m pytest -q

package: $(SETUP_STAMP)
	$(PY) -m sar_cloud_removal.scripts.package --out dist/sar_cloud_removal.zip

bench: $(SETUP_STAMP)
	.venv/bin/sar-cloud-removal bench

clean:
	rm -rf dist demo_output bench_output .pytest_cache
