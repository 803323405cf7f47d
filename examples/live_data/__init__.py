"""The live data example: a 100 Hz feed, backpressure and the slow-consumer policy."""
