"""Benchmarks of Syncbit (not tests: nothing here asserts a time, DESIGN §9).

A package so that the shaped-network benchmark can be split into small modules and started as
`python -m bench.swarm` from the project root; see bench/README.md.
"""
