import sys

from pipeline.demo import main

sys.exit(main())
