from services.simulator.cli import app

app(prog_name="dwsim")
