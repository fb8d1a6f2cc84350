"""The bench harness shared by bench/raft_bench.py and bench/kv_bench.py
(issue 13, section 4); each script keeps only its systems and steps.

* :mod:`.stats`: percentiles, median with min-max, one ``fmt``;
* :mod:`.yardsticks`: raw fdatasync, loopback RTT, the hard-state write;
* :mod:`.profiling`: py-spy and cProfile summaries of a leader;
* :mod:`.report`: the ratio, target and summary lines, the JSON dump;
* :mod:`.runner`: the run's frame (header, Ctrl-C/SIGTERM, temp dir).

Processes are started and killed by PID through :mod:`liferaft.harness`,
the one process harness.  docs/bench.md describes the method.
"""
