.PHONY: demo test test-unit setup bench
demo:  ## set up and run the main job on the embedded default (local broker + local model)
	scripts/demo.sh
test:  ## set up and run every test: unit, then integration on the real broker, model and FHIR server (CI runs this)
	scripts/test.sh
test-unit:  ## set up and run the fast unit tier only: no model, no broker, no server (the inner loop)
	scripts/test.sh tests/unit
setup:
	scripts/setup.sh
