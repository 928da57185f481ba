"""The reliability suite's groups of cases (issue 15); tests/reliability_cases.py lists them."""
