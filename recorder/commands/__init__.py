"""One module per command (``bfx-recorder NAME``): each owns its click command, its options
and what it does. :mod:`recorder.cli` loads a command's module only when it runs, so a
command imports only what it uses."""
