import sys

from pushrelay.infra.runtime import run_services
from pushrelay.infra.settings import RouterSettings, load_settings
from router.service import create

sys.exit(run_services([create], load_settings(RouterSettings)))
