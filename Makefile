.PHONY: demo test test-unit fuzz setup bench deploy-check image
demo:  ## set up and run the main job on the embedded default (local broker + local model)
	scripts/demo.sh
test:  ## set up and run every test: unit, then integration on the real broker, model and FHIR server (CI runs this)
	scripts/test.sh
test-unit:  ## set up and run the fast unit tier only: no model, no broker, no server (the inner loop)
	scripts/test.sh tests/unit
fuzz:  ## a longer, randomized fuzz run of the readers (about 5 minutes; `make test` runs a small derandomized one)
	RADBRIDGE_FUZZ_EXAMPLES=$${RADBRIDGE_FUZZ_EXAMPLES:-10000} RADBRIDGE_FUZZ_RANDOM=1 scripts/test.sh tests/unit/test_fuzz.py tests/unit/test_fuzz_corpus.py -q
setup:
	scripts/setup.sh
deploy-check:  ## validate the deployment kit (hadolint, docker compose config, kubernetes-validate) and its metric names
	scripts/test.sh tests/integration/test_deploy_files.py tests/integration/test_deploy_metrics.py -q
image:  ## build the service image (needs a Docker engine; base install, no torch)
	docker build -t radbridge:$$(.venv/bin/python -c 'import radbridge; print(radbridge.__version__)') .
