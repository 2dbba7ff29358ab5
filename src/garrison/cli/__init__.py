"""The ``garrison`` command line: a thin shell over the services and the admin API."""
