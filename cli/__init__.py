"""The command line: `tfblackbox` (store tools, ways in, ways out) and `replay`. Each command
is a function the tests call; exits.py says which exit code means what."""
