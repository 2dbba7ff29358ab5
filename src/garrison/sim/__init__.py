"""The fleet simulator: many lightweight simulated devices in one process, speaking the
real device API over mutual TLS (EST enrollment, check-in with inventory, directive polls
with ``If-None-Match``, progress reports), for the benchmarks, tests and demos.

:mod:`.http` is the lean HTTP/1.1 client connection, :mod:`.identity` enrollment and TLS.
"""
