"""What both sides of a runner's control socket share, and nothing else.

    protocol.py   newline-delimited JSON requests/replies, size limits   (pure)
    locks.py      the runner's lock file: "is a runner alive?" = "is it locked"
    procs.py      process identity: a PID plus its start time, pidfds

The runner process (``maqet_engine.runner``) and the caller-side control code
(``maqet_engine.control``) both import this package; it imports neither of them.
"""
