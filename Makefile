.PHONY: demo test setup bench
demo:  ## set up and run the main job on the embedded default (local broker + local model)
	scripts/demo.sh
test:  ## set up and run the tests
	scripts/test.sh
setup:
	scripts/setup.sh
