"""A local Graph-compatible HTTPS tenant for tests, the demo and benchmarks (see docs/emulator.md).

Shaped like moto: `state` (tenant data, no HTTP), `odata` (requests, responses and query
options), the handlers (`directory`, `messages`, `mail`, `teams`, `audit`, `sendmail`,
`rule_write`), `identity` (Entra-like tokens), `faults` (throttling and errors), `route_table`,
`routes` (the gate and `$batch`) and `server`.
"""
