"""`python -m hl7bus.ops.cli`: the `hl7bus` command (how tests and the demo start it)."""

from hl7bus.ops.cli import main

main()
