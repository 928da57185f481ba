"""The global step at which a session.run began, exactly, without an extra session.run.

The global-step read that SummarySaverHook and WandbHook fetch races with the train op's
increment: fetched in the same run, it returns the value before or after it. So `begin()` adds
one read op and makes every op that increments the global step wait for it (a control edge):
fetched with the train op, it is the step the run began at, in every run, for free. Graphs
where no increment is found (or that cannot be changed) fall back to the racy read, which
`StepTracker` follows and hooks confirm with an exact read after the run where it matters.
"""

import logging
import weakref

log = logging.getLogger("tfblackbox")

_INCREMENTS = {"AssignAddVariableOp", "AssignSubVariableOp", "AssignAdd", "AssignSub"}


# graph -> (read tensor, exact): kept here, not in a graph collection, so nothing of the
# recorder's ends up in the user's MetaGraph (a Python bool in a collection made every
# checkpoint save log "Issue encountered when serializing ...")
_READS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def step_before_run(tf):
    """(tensor, exact) for the default graph: the read op shared by all hooks of the graph,
    and whether every increment of the global step is ordered after it."""
    graph = tf.compat.v1.get_default_graph()
    found = _READS.get(graph)
    if found is not None:
        return found
    step = tf.compat.v1.train.get_global_step(graph)
    if step is None:
        return None, False
    if graph.finalized:   # no op can be added: fetch the variable itself (its racy read)
        return step, False
    target = step.handle if hasattr(step, "handle") else step._ref()   # resource or ref variable
    # the ops that take the variable itself as their first input: among its consumers, not a
    # walk of the whole graph (one C call a node: ~10k ops at 2 509 watched tensors)
    increments = [op for op in target.consumers()
                  if op.type in _INCREMENTS and op.inputs and op.inputs[0] is target]
    with tf.control_dependencies(None), tf.name_scope("tfblackbox/"):
        # a copy: Identity of a ref variable aliases its buffer and shows the later increment
        before = tf.raw_ops.Snapshot(input=step.read_value(), name="global_step_before_run")
    exact = False
    try:
        for op in increments:
            op._add_control_input(before.op)   # noqa: SLF001 — TF1 graphs are frozen API
        exact = bool(increments)
    except Exception as e:   # an op that cannot take the edge: the racy read it is
        log.warning("tfblackbox: cannot order the global-step read before its increment (%s); "
                    "steps are read after logging runs instead", e)
    _READS[graph] = (before, exact)
    return before, exact


class StepTracker:
    """Knows the step each session.run begins at: exactly when the read is ordered, else by
    following the racy read (then `confirm()` with an exact read after the run)."""

    def __init__(self, tf):
        try:
            self.tensor, self.exact = step_before_run(tf)
        except Exception as e:   # never take the training down: count runs instead
            log.error("tfblackbox: cannot read the global step (%s); counting session.run "
                      "calls from 0 instead", e)
            self.tensor, self.exact = None, False
        self.next = 0 if self.tensor is None else None   # no global step: count runs
        self._read = None

    def start(self, session, run, hook):
        """In after_create_session: reads the step the first run will begin at and tells the
        run (an attempt's first step supersedes older attempts' rows). Never raises."""
        if self.tensor is None:
            return
        try:
            self._read = session.make_callable(self.tensor)   # ~35 us; session.run ~200 us
            self.next = int(self._read())
            run.note_start_step(self.next)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: %s could not read the global step: %s", hook, e)

    def fetches(self):
        return {} if self.tensor is None else {"step": self.tensor}

    def advance(self, results):
        """After a run: returns the step it began at (best estimate unless exact)."""
        predicted = self.next
        if self.tensor is None:
            self.next = predicted + 1
            return predicted
        seen = int(results["step"])
        if self.exact:
            self.next = seen + 1
            return seen
        if predicted is None or seen not in (predicted, predicted + 1):
            predicted = seen              # out of step with our count: follow the graph
        self.next = predicted + 1
        return predicted

    def confirm(self, began):
        """Racy case, after a run that matters: re-reads the step (as SummarySaverHook does) and
        returns the step that run began at, assuming an increment of one."""
        if self.exact or self._read is None:
            return began
        after = int(self._read())
        self.next = after
        return after - 1
