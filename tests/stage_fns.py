"""Stage functions for the executor tests, importable by Ray workers (the tests folder is put on their path)."""
import json
import os
import time


def sleepy(job) -> None:
    """Record when it ran; sleep long enough that two stages run at once overlap unmistakably."""
    start = time.time()
    time.sleep(job.config["seconds"])
    (job.work / "times.json").write_text(json.dumps({"start": start, "end": time.time(), "pid": os.getpid()}))


def dies_once(job) -> None:
    """The first attempt kills its own worker process mid-stage (after writing part of its work); the retry,
    resuming in the same partial folder, finishes."""
    marker = job.work / "attempt-1.txt"
    if not marker.exists():
        marker.write_text("half of the work")
        os._exit(1)
    (job.work / "out.txt").write_text("done after a retry")


def upstream_sum(job) -> None:
    """Reads its inputs' outputs: a stage that must wait for them."""
    total = sum(json.loads((stage / "times.json").read_text())["end"] > 0 for stage in job.inputs.values())
    (job.work / "count.txt").write_text(str(total))
