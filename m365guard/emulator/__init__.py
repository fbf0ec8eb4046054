"""A local Graph-compatible HTTPS tenant for tests, the demo and benchmarks (see docs/emulator.md).

Shaped like moto: `state` (tenant data, no HTTP), `handlers` (OData in/out), `identity`
(Entra-like tokens), `faults` (throttling and errors), `routes` (the route table) and `server`.
"""
