"""``python -m garrison.cli``."""

from garrison.cli.main import main

main()
