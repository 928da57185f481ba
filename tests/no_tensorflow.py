"""A child process that cannot import TensorFlow, TensorBoard or Keras: a sitecustomize shim
on its PYTHONPATH blocks them and notes every attempt, for the tests of code that must run
without them (replays, show, rebuilds)."""

BLOCK_TF = """
import importlib.abc, os, sys
class _NoTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorboard", "keras"):
            with open(os.environ["TF_ATTEMPTS"], "a") as f:
                f.write(name + "\\n")
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoTF())
"""


def shim(tmp_path):
    """(environment variables that put the shim in place, the file attempts are noted in)."""
    folder = tmp_path / "shim"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCK_TF)
    attempts = tmp_path / "attempts.txt"
    return {"PYTHONPATH": str(folder), "TF_ATTEMPTS": str(attempts)}, attempts
