"""What W&B records about the machine and the process besides the history: the environment
(facts.py, nvml.py), the run's files (files.py) and system metrics (sampler.py, recording.py).
"""
