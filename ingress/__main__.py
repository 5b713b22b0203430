import sys

from ingress.service import create
from pushrelay.infra.runtime import run_services
from pushrelay.infra.settings import IngressSettings, load_settings

sys.exit(run_services([create], load_settings(IngressSettings)))
