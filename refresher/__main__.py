import sys

from pushrelay.infra.runtime import run_services
from pushrelay.infra.settings import RefresherSettings, load_settings
from refresher.service import create

sys.exit(run_services([create], load_settings(RefresherSettings)))
