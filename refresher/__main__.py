from pushrelay.cli.services import main_for

main_for("refresher")
