"""A recorder.log run for the report's tests, made with wandb (offline) beside it receiving the
same calls: short, single-point and constant series, define_metric summaries, run.summary,
strings, ints and bools, a histogram with a long tag, wandb.Images (one, and a list) at two
steps, and console output (stdout, stderr, a progress bar, colours). No TensorFlow.

    python report_script.py WANDB_DIR STORE
"""

import sys

import numpy as np
import wandb

from tfblackbox import recorder

HIST_TAG = "weights/dense_block_1/kernel/a_rather_long_histogram_tag_that_needs_room"


def images(step):
    """Two 16x12 RGB gradients that differ by step (the report shows the latest step's)."""
    y, x = np.mgrid[0:12, 0:16]
    a = np.stack([x * 16, y * 20, np.full_like(x, 40 * step)], -1).astype(np.uint8)
    b = np.stack([np.full_like(x, 200), x * 8 + step, y * 10], -1).astype(np.uint8)
    return a, b


def main(wandb_dir, store):
    direct = wandb.init(mode="offline", dir=wandb_dir, project="report",
                        settings=wandb.Settings(console="off", silent=True))
    run = recorder.init(store=store, run_id="media-run", name="media run", project="report",
                        config={"lr": 0.01})   # console="auto": prints are recorded

    def both(method, *args, **kwargs):
        for side in (direct, run):
            if method == "summary":
                side.summary.update(*args)
            elif method == "summary_del":
                del side.summary[args[0]]
            else:
                getattr(side, method)(*args, **kwargs)

    rng = np.random.default_rng(5)
    both("define_metric", "epoch/loss", summary="min,last")
    both("define_metric", "val/*", summary="max")
    both("define_metric", "hidden_metric", summary="none")
    for epoch in range(4):
        both("log", {"epoch/loss": 1.0 / (epoch + 1) + 0.3 * (epoch % 2), "epoch/epoch": epoch,
                     "val/acc": [0.5, 0.8, 0.7, 0.75][epoch], "hidden_metric": epoch})
        print(f"epoch {epoch}: loss {1.0 / (epoch + 1):.3f}")
    for i in range(30):
        both("log", {"batch/loss": float(np.exp(-i / 10) + rng.normal(0, 0.05)),
                     "batch/lr": 0.01})
    both("summary", {"val/acc": 0.1})        # a later logged val/acc overrides it, as in W&B
    both("log", {"val/acc": 0.6, HIST_TAG: rng.normal(size=200)})
    both("log", {HIST_TAG: rng.normal(1, 2, size=200)})
    for step in (1, 2):
        a, b = images(step)
        both("log", {"samples": wandb.Image(a, caption=f"gradient at {step}"),
                     "grid": [wandb.Image(a), wandb.Image(b, caption="second")]})
    both("log", {"eval/acc": 0.91, "flag": True, "count": 3, "status": "done"})
    both("summary", {"best_acc": 0.93, "note": "temporary"})
    both("summary_del", "note")
    for i in range(150):
        print(f"line {i:03d}")
    print("something went wrong (a warning)", file=sys.stderr)
    sys.stdout.write("progress 1/3\rprogress 2/3\rprogress 3/3\n")
    print("\x1b[32mcoloured\x1b[0m end")
    recorder.finish()
    direct.finish()


if __name__ == "__main__":
    main(*sys.argv[1:3])
