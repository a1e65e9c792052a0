"""The frozen launcher's entry point (PyInstaller runs this script)."""

import sys

from duetto_launcher.main import main

sys.exit(main())
