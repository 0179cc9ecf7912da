"""Blocking system calls bounded in time, without the `select` module.

`select` is an extension module: loading it cost every hook ~0.4 ms, to bound two waits
(the OCI document on stdin, a forked child's report and exit). Here the wait is the
blocking call itself (os.read, os.waitpid) under a one-shot real-time interval timer: when
it expires, SIGALRM interrupts the call and the handler raises Expired, which the call
passes on (PEP 475: a system call is not retried when the handler raises). The `_signal`
module is built into the interpreter (no file to load); the timer and the previous
SIGALRM disposition are restored on the way out, and nvbind's hooks have no other use for
SIGALRM. Main thread only (Python runs signal handlers there), as every hook runs.

    with deadline.within(seconds):        # Expired when the time is up
        data = os.read(fd, n)
"""
import _signal


class Expired(Exception):
    """The time given to `within` is up."""


def _expired(_signum, _frame):
    raise Expired()


class within:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        if self.seconds <= 0:
            raise Expired()
        self.previous = _signal.signal(_signal.SIGALRM, _expired)
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, self.previous)
        return False
