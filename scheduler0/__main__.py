from scheduler0.cli.main import run

run()
