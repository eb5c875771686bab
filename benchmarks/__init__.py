"""Latency, memory and throughput benchmarks; results go to benchmarks/results/ (dated)."""
