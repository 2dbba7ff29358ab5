"""The fleet simulator: many lightweight simulated devices in one process, speaking the
real device API over mutual TLS (EST enrollment, check-in with inventory, directive polls
with ``If-None-Match``, progress reports, operator commands), for the benchmarks, the tests
and trying a control plane out.

* :mod:`.http` — the lean HTTP/1.1 client connection (asyncio, TLS, kept alive);
* :mod:`.identity` — a key made in-process, EST enrollment, the device's TLS context;
* :mod:`.state` — what a simulated device runs and remembers (pure; the agent's rules);
* :mod:`.device` — one device on the wire: its link and the agent's cycle;
* :mod:`.fleet` — :class:`~.fleet.Simulator`, thousands of devices on one event loop;
* :mod:`.scenario` — setting a fleet up through its admin API (batch, release, group,
  campaign).
"""
