import sys

from eva_ros.demo.cli import main

sys.exit(main())
