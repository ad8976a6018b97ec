"""The retention benchmark: ``flowkit db prune`` of ``--prune-runs`` finished runs while a
worker runs the six-stage pipeline, against the same pipeline without a prune.

1. Seed ``--prune-runs`` runs of the pipeline that ended 31 to 60 days ago, each with
   ``--prune-steps`` succeeded steps, in SQL (``INSERT ... SELECT generate_series``).
2. One ``flowkit worker`` (1 x 8 threads) runs rounds of ``--prune-items`` pipeline
   items (submitted with ``submit_many``, so the worker, not the submitter, is the
   bound), in pairs: one round while ``flowkit db prune --older-than 30d`` (its own
   process) is stopped with SIGSTOP, one while it runs (SIGCONT), until it is done. On
   a machine shared with other work, the pairs see the same load.
3. The prune's rate is the runs it deleted over the seconds it ran (the rounds it was
   let run); the throughput ratio is the step throughput of the rounds with the prune
   over the rounds without.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import threading
import time
from typing import Any

import psycopg

from .harness import PY, ROOT, Env, check_alive, fk_app, fk_finished, fk_workers, stop, upgrade_db

STAGES = 6


def seed(pg: str, n: int, steps_per_run: int) -> float:
    """``n`` finished runs ended 31..60 days ago with their steps; the seconds it took."""
    t = time.perf_counter()
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(
            "INSERT INTO flowkit_runs (id, flow, status, input, output, created_at, "
            "started_at, finished_at) "
            "SELECT lpad(to_hex(g), 32, '0'), 'bench6', "
            "CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'succeeded' END, '1'::jsonb, '1'::jsonb, "
            "t - interval '1 second', t - interval '1 second', t "
            "FROM (SELECT g, now() - interval '31 days' - (g %% 2592000) * interval '1 second' "
            "AS t FROM generate_series(1, %s) g) x",
            (n,),
        )
        c.execute(
            "INSERT INTO flowkit_steps (id, run_id, name, status, queue, attempts, input, "
            "output, created_at, started_at, finished_at) "
            "SELECT lpad(to_hex(g), 30, '0') || lpad(s::text, 2, '0'), lpad(to_hex(g), 32, '0'), "
            "'s' || s, 'succeeded', 'fk.s' || s, 1, '1'::jsonb, '1'::jsonb, "
            "now() - interval '31 days', now() - interval '31 days', now() - interval '31 days' "
            "FROM generate_series(1, %s) g, generate_series(0, %s - 1) s",
            (n, steps_per_run),
        )
        c.execute("VACUUM ANALYZE")
    return time.perf_counter() - t


def one_round(fk: Any, pg: str, items: int) -> tuple[float, int]:
    """``items`` pipeline runs submitted at once and waited for: (seconds, steps run)."""
    t0 = time.time()
    runs = []
    for b in range(0, items, 500):
        runs += [r.id for r in fk.pipeline.submit_many(list(range(b, min(b + 500, items))))]
    done = fk_finished(pg, runs, 600)
    return max(f for _, f in done) - t0, items * STAGES


def throughput(rounds: list[tuple[float, int]]) -> float:
    return round(sum(n for _, n in rounds) / sum(s for s, _ in rounds), 1)


def scenario_prune(args: argparse.Namespace, results: dict[str, Any]) -> None:
    n, items = args.prune_runs, args.prune_items
    out: dict[str, Any] = {
        "runs": n,
        "steps_per_run": args.prune_steps,
        "items": items,
        "batch": args.prune_batch,
        "rate": args.prune_rate,
    }
    with Env() as env:
        upgrade_db(env)
        out["seed_seconds"] = round(seed(env.pg, n, args.prune_steps), 1)
        procs = fk_workers(env, 1, name="fk-prune")
        fk = fk_app(env)
        prune: subprocess.Popen[str] | None = None
        try:
            fk.pipeline.submit(-1).wait(60)  # the worker is up
            check_alive(procs, "flowkit worker")
            one_round(fk, env.pg, items)  # warm-up
            argv = [PY, "-m", "flowkit", "db", "prune", "--older-than", "30d"]
            argv += ["--batch", str(args.prune_batch)]
            if args.prune_rate:
                argv += ["--rate", str(args.prune_rate)]
            prune = subprocess.Popen(
                argv,
                env=env.env(),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            prune.send_signal(signal.SIGSTOP)
            ended: list[float] = []  # when the prune exited, by a thread waiting for it
            threading.Thread(
                target=lambda: (prune.wait(), ended.append(time.perf_counter())), daemon=True
            ).start()
            alone, during, active = paired_rounds(
                fk, env.pg, items, prune, args.prune_rounds, ended
            )
            stdout, stderr = prune.communicate(timeout=60)
            if prune.returncode != 0:
                raise RuntimeError(f"flowkit db prune exited {prune.returncode}: {stderr}")
        finally:
            if prune is not None and prune.poll() is None:
                prune.send_signal(signal.SIGCONT)
                prune.kill()
                prune.wait()
            fk.app.close()
            stop(procs)
        with psycopg.connect(env.pg) as c:
            row = c.execute(
                "SELECT count(*) FROM flowkit_runs WHERE finished_at < now() - interval '30 days'"
            ).fetchone()
    alone_tp, during_tp = throughput(alone), throughput(during)
    out.update(
        {
            "prune_active_seconds": round(active, 2),
            "prune_runs_per_s": round(n / active, 1),
            "prune_output": stdout.strip(),
            "left_over_30d": int(row[0]) if row else -1,
            "pairs": len(during),
            "steps_per_s_without_prune": alone_tp,
            "steps_per_s_during_prune": during_tp,
            "throughput_ratio": round(during_tp / alone_tp, 3),
        }
    )
    results["prune"] = out


def paired_rounds(
    fk: Any, pg: str, items: int, prune: subprocess.Popen[str], least: int, ended: list[float]
) -> tuple[list[tuple[float, int]], list[tuple[float, int]], float]:
    """Rounds in pairs, the prune stopped (SIGSTOP) then running (SIGCONT), until it is
    done (and at least ``least`` pairs): the machine's other load falls on both alike.

    Returns the rounds without, the rounds with, and the seconds the prune ran.
    """
    alone, during, active = [], [], 0.0
    while prune.poll() is None or len(during) < least:
        alone.append(one_round(fk, pg, items))
        if prune.poll() is None:
            t = time.perf_counter()
            prune.send_signal(signal.SIGCONT)
            during.append(one_round(fk, pg, items))
            # A prune that ended within the round ran until it ended.
            active += (ended[0] if ended else time.perf_counter()) - t
            if prune.poll() is None:
                prune.send_signal(signal.SIGSTOP)
        else:
            during.append(one_round(fk, pg, items))  # too few pairs: the prune's after-effect
    return alone, during, active
