"""The ``pushrelay`` command line: one module per subcommand group."""
