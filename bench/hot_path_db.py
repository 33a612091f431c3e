"""Where a label's database CPU goes: labels one by one (next + submit) in-process, per statement.

Not a registered benchmark (no JSON result): a probe for docs/platform-benchmarks.md. It sends
the labels through Django's request handler with each annotator's token (no HTTP, one database
connection, no concurrency), in rounds, and per round reports the Python CPU per label
(`time.process_time`), the PostgreSQL backend's CPU per label (utime + stime of its process,
/proc), and the backend's CPU per statement text (its scheduler run time, /proc/<pid>/schedstat,
read around each statement), plus the dead rows of the hot tables. The server's own autovacuum
may be off (it is on the shared development machine): `--vacuum` runs VACUUM (ANALYZE) on the
hot tables before each round, as autovacuum would have. PostgreSQL on the same machine only.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/<a database of yours>
    export DJANGO_SETTINGS_MODULE=config.settings.test
    python manage.py migrate
    python -m bench.latency seed 60000 50 > /tmp/seeded.json
    python -m bench.hot_path_db /tmp/seeded.json --rounds 4 --labels 500 [--vacuum]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

HOT_TABLES = ("labeling_queueitem", "labeling_lease", "labeling_label", "labeling_currentlabel")


def _backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_run_s(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


AHEAD = 3


def _submit_and_claim(client, queue: int, value: str, held: list[int]):
    """Submit the oldest lease held and claim up to AHEAD, as the labeling page does."""
    import uuid

    entry = {"lease": held.pop(0), "value": value, "client_id": uuid.uuid4().hex}
    answer = client.post(
        f"/api/v1/queues/{queue}/submit-next/", {"entries": [entry], "count": AHEAD},
        content_type="application/json",
    )  # fmt: skip
    if answer.status_code == 200:
        for lease in answer.json()["leases"]:
            if lease["lease"] not in held:
                held.append(lease["lease"])
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeded", help="JSON printed by `python -m bench.latency seed`")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--labels", type=int, default=500, help="labels per round")
    parser.add_argument("--vacuum", action="store_true", help="VACUUM (ANALYZE) each round")
    parser.add_argument(
        "--pattern",
        choices=("one_by_one", "submit_and_claim"),
        default="one_by_one",
        help="next + submit, or the labeling page's: 3 claimed ahead, then submit-next per label",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    seeded = json.loads(Path(args.seeded).read_text())
    queue, value = seeded["queue"], seeded["classes"][0]
    clients = [
        Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {token}")
        for token in seeded["tokens"]
    ]
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    per_statement: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    counting = [False]

    def measure(execute, sql, params, many, context):
        started = _backend_run_s(pid)
        try:
            return execute(sql, params, many, context)
        finally:
            if counting[0]:
                # EXECUTE of a prepared statement: name it by the statement it runs.
                key = re.sub(r"\s+", " ", sql.split(";")[-1]).strip()
                key = key.split("(")[0] if key.startswith("EXECUTE ") else key[:90]
                per_statement[key][0] += 1
                per_statement[key][1] += _backend_run_s(pid) - started

    # Each annotator's leases claimed ahead (the labeling page's pattern), oldest first.
    held: list[list[int]] = [[] for _ in clients]
    if args.pattern == "submit_and_claim":
        for client, leases in zip(clients, held, strict=True):
            answer = client.post(
                f"/api/v1/queues/{queue}/next/", {"count": AHEAD}, content_type="application/json"
            )
            leases.extend(lease["lease"] for lease in answer.json()["leases"])
    with connection.execute_wrapper(measure):
        for number in range(args.rounds):
            if args.vacuum:
                with connection.cursor() as cur:
                    cur.execute(f"VACUUM (ANALYZE) {', '.join(HOT_TABLES)}")
            per_statement.clear()
            counting[0] = True
            py, db, wall = time.process_time(), _backend_cpu_s(pid), time.perf_counter()
            for i in range(args.labels):
                client = clients[i % len(clients)]
                if args.pattern == "submit_and_claim":
                    answer = _submit_and_claim(client, queue, value, held[i % len(clients)])
                else:
                    answer = client.post(
                        f"/api/v1/queues/{queue}/next/", {"count": 1},
                        content_type="application/json",
                    )  # fmt: skip
                    lease = answer.json()["leases"][0]["lease"]
                    answer = client.post(
                        f"/api/v1/leases/{lease}/submit/", {"value": value},
                        content_type="application/json",
                    )  # fmt: skip
                if answer.status_code != 200:
                    raise RuntimeError(answer.content)
            counting[0] = False
            n = args.labels
            figures = {
                "round": number,
                "labels": n,
                "python_cpu_ms_per_label": round((time.process_time() - py) * 1000 / n, 2),
                "db_cpu_ms_per_label": round((_backend_cpu_s(pid) - db) * 1000 / n, 2),
                "wall_ms_per_label": round((time.perf_counter() - wall) * 1000 / n, 2),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                    [list(HOT_TABLES)],
                )
                figures["dead_rows"] = dict(cur.fetchall())
                cur.execute("SELECT name, statement FROM pg_prepared_statements")
                prepared = {f"EXECUTE {name}": text for name, text in cur.fetchall()}
            print(json.dumps(figures))
            for key, (count, seconds) in sorted(per_statement.items(), key=lambda kv: -kv[1][1]):
                text = re.sub(r"\s+", " ", prepared.get(key, key).split(" AS ", 1)[-1])[:90]
                print(f"  {seconds * 1000 / n:6.2f} ms/label  {count / n:4.2f}/label  {text}")


if __name__ == "__main__":
    main()
