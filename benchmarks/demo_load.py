"""Soak test of the demo: concurrent clients of mixed weight against a local server.

    python benchmarks/demo_load.py --clients 8 --minutes 3

Starts the demo (app.py, the bundled model unless LPIPDIFF_MODEL says otherwise) on
127.0.0.1 in this process, then runs ``--clients`` gradio_client clients for ``--minutes``
minutes (at most ``--max-requests`` requests in all). Each client sends, one after another,
requests drawn from a fixed mix: light (an aligned face, one step), whole photos, and heavy
ones (the most work one request may ask for); some heavy ones are abandoned after a few seconds
(``Job.cancel``), as a closed browser tab would. Prints requests served, refused (the queue
was full, or the request was over a limit), timed out (stopped at the wall-time limit),
failed (anything else), latency percentiles per
kind, the server's peak memory, and whether abandoned work stopped. Localhost only.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "examples" / "astronaut_face_severe.png"
PHOTO = ROOT / "examples" / "astronaut_photo_severe.png"
# (kind, weight in the mix, image, arguments after the image: mode, steps, scheduler, strength, stride,
# seed, samples, detail). "heavy" is 4 samples x 9 steps x 25 patches (stride 16) = 900 patch restorations.
MIX = [
    ("light", 5, FACE, ("Aligned face", 1, "ddim", 1.0, 32, 0, 1, 1.0)),
    ("photo", 3, PHOTO, ("Auto", 1, "ddim", 1.0, 32, 0, 1, 1.0)),
    ("heavy", 2, FACE, ("Aligned face", 9, "ddim", 1.0, 16, 0, 4, 1.0)),
]
ABANDON_SHARE, ABANDON_AFTER = 0.5, 3.0
GRACE = 120.0  # seconds after the run's end that a request still in flight may take to finish


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(url: str, deadline: float, budget: list[int], results: list, lock: threading.Lock, seed: int):
    from gradio_client import Client, handle_file

    rng = random.Random(seed)
    client = Client(url, verbose=False)
    kinds = [kind for kind, weight, _, _ in MIX for _ in range(weight)]
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        kind = rng.choice(kinds)
        _, _, image, arguments = next(entry for entry in MIX if entry[0] == kind)
        # Each request its own seed: identical concurrent outputs race in Gradio's file cache
        # (one request's file rewritten while another's is being sent), which is not what this measures.
        arguments = (*arguments[:5], rng.randrange(2**31), *arguments[6:])
        abandon = kind == "heavy" and rng.random() < ABANDON_SHARE
        start = time.monotonic()
        try:
            job = client.submit(handle_file(str(image)), *arguments, api_name="/restore")
            if abandon:
                time.sleep(ABANDON_AFTER)
                job.cancel()
                outcome = "abandoned"
            else:
                try:
                    job.result(timeout=max(5.0, deadline + GRACE - time.monotonic()))
                    outcome = "served"
                except TimeoutError:
                    job.cancel()  # the run is over: stop waiting (and let the server stop the work)
                    outcome = "unfinished"
        except Exception as error:  # the client raises one class for every server-side message
            text = str(error)
            if "Queue is full" in text or "allowed" in text:
                outcome = "refused"
            elif "stopped after" in text:
                outcome = "timed out"  # the request's wall-time limit, with its message
            else:
                outcome = "failed"
            if outcome == "failed":
                print(f"failed ({kind}): {text[:200]}", flush=True)
        with lock:
            results.append((kind, outcome, time.monotonic() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 0 < args.minutes <= 30:
        parser.error("--clients must be 1..64 and --minutes in (0, 30]")

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(ROOT))  # app.py is a script at the top of the checkout, not a module of the package
    import app
    from lpipdiff.serving.service import RestorationService
    from lpipdiff.serving.settings import ServingSettings

    service = RestorationService(ServingSettings.from_environment())
    demo = app.build_demo(service)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    results, lock, budget = [], threading.Lock(), [args.max_requests]
    deadline = time.monotonic() + 60 * args.minutes
    threads = [threading.Thread(target=client_loop, args=(url, deadline, budget, results, lock, args.seed + i))
               for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    settle = time.monotonic()
    while service.tally.running and time.monotonic() - settle < 60:  # abandoned work still stopping
        time.sleep(0.2)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    demo.close()

    counts = defaultdict(int)
    latencies = defaultdict(list)
    for kind, outcome, seconds in results:
        counts[outcome] += 1
        if outcome == "served":
            latencies[kind].append(seconds)
    print(f"\n{args.clients} clients for {wall:.0f} s, {len(results)} requests: served {counts['served']}, "
          f"refused {counts['refused']}, timed out {counts['timed out']}, failed {counts['failed']}, "
          f"abandoned {counts['abandoned']}, unfinished at the end {counts['unfinished']}")
    print("| kind | served | p50 s | p90 s | max s |\n|---|---|---|---|---|")
    for kind, *_ in MIX:
        values = np.array(latencies[kind])
        if len(values):
            p50, p90 = np.percentile(values, [50, 90])
            print(f"| {kind} | {len(values)} | {p50:.1f} | {p90:.1f} | {values.max():.1f} |")
    print(f"peak memory of the server process (with its clients): {peak_mb:.0f} MB")
    print(f"restorations stopped (abandoned or over time): {service.tally.stopped}; "
          f"still running after the run: {service.tally.running}")


if __name__ == "__main__":
    main()
