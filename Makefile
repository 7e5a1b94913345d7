# Shortcuts; the scripts install whatever is missing.
.PHONY: run test bench
run:
	scripts/run-service
test:
	scripts/run-tests
bench:
	scripts/run-bench
