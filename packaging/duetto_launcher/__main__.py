import sys

from duetto_launcher.main import main

sys.exit(main())
