"""The project's benchmark: Pillbug side by side with PostgreSQL 15, in one run.

`python -m bench.run` (or `make bench`) starts both servers itself, runs the same workloads against
each in interleaved rounds and writes docs/benchmarks.md. The modules, in the order a run uses them:

  servers.py    a CA and certificates for the run, a PostgreSQL 15 server and a Pillbug node
                started on their own ports with TLS, and a password user on each
  workloads.py  what is measured: point reads and point updates from one psycopg2 connection,
                pgbench's select-only and tpcb-like scripts (and the parsing of pgbench's output)
  profiling.py  py-spy attached to the Pillbug node during a workload; hot spots from its profile
  report.py     medians, ratios and the targets; the Markdown page, keeping earlier runs' results
  run.py        the command line and the order of things

Beside the benchmark, `python -m bench.slt` (`make slt`) measures the SQL engine against SQLite's
sqllogictest corpus in ../shared/slt, on a Pillbug node started with servers.py, and writes
docs/slt.md.

Both talk to the servers only as a client does (psycopg2, pgbench over TLS): it imports
nothing from `pillbug` and must not, so that it measures what users get.
"""
