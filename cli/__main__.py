"""`python -m sar_cloud_removal.cli ...`: the same as the `sar-cloud-removal` command."""
import sys

from . import main

sys.exit(main())
