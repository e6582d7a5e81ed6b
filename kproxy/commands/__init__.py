"""The subcommands of the ``kproxy`` command line."""
