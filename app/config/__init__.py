"""What the user chose and keeps: settings and personas, stored in the config folder.

No Qt here: the window reads and writes these through plain functions, and tests (or
a command-line tool) can do the same without a display.
"""
