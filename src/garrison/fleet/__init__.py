"""Fleet control: inventory, groups, desired state, directives, rollout campaigns.

Pure cores (no I/O): :mod:`.filters`, :mod:`.inventory`, :mod:`.desired`, :mod:`.windows`,
:mod:`.campaign`, :mod:`.level`. Services on a database connection: the other modules.
See docs/fleet.md.
"""
