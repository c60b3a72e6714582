# The replay feed: one trace replay stepped in C for the SimPy driver.
# Included by _core.pyx, after ClusterState.
#
# Arrivals (a cursor over slots sorted by submit time), completions (a
# TimeHeap of actual ends, stale ones of requeued jobs skipped), node failures
# and repairs, the autoscaler's decisions after each pass, and the recorded
# time series (one row per step at least series_dt apart, SERIES_COLUMNS).
# ReplayFeed is one cdef class and stays whole: Cython allows ``include``
# only at module level, so a class's methods cannot be split across files.


cdef class ReplayFeed:
    """Arrivals and completions of a trace replay, for one SimPy driver process.

    The simulator knows what the kernel must not: each job's actual run time
    and whether it succeeds. This feed keeps the arrival cursor and a binary
    heap of completion times (ties by slot index) in C, so that a step of the
    simulation is a handful of calls whatever the queue length.
    """

    cdef int n
    cdef public int cursor  # slots below it have arrived
    cdef int64_t* submit
    cdef int64_t* duration
    cdef int8_t* ok
    cdef TimeHeap done
    cdef public long long n_events
    cdef public long long n_quiet    # steps advance() took without returning
    cdef public int64_t last_s       # the time of the last step (-1: none yet)
    # time series: one row per distinct step time at least series_dt apart
    cdef int64_t* rows
    cdef double* rate
    cdef int n_rows
    cdef int cap_rows
    cdef int cap_rate
    cdef public int64_t series_dt    # -1: no series
    # node failures and repairs, in time order (repairs first at one instant)
    cdef int64_t* ev_t
    cdef int8_t* ev_fail
    cdef int32_t* ev_node
    cdef int64_t* ev_repair
    cdef int n_ev
    cdef int ev_next
    cdef int64_t* up_at              # per node: when its outage ends, -1 up
    cdef int n_up_at
    # Slurm compatibility profile (see set_slurm_compat); 0 and 0: off
    cdef public int64_t reaction_s   # the scheduler sees an arrival or an end this much later
    cdef public int64_t bf_interval_s  # backfill only at multiples of it (0: every pass)
    cdef int64_t next_bf_s           # the next multiple of bf_interval_s
    cdef int64_t last_bf_s           # the last backfill cycle's time (-1: none)
    cdef bint bf_dirty               # a step ran since the last backfill pass

    def __cinit__(self, const int64_t[::1] submit_s, const int64_t[::1] duration_s,
                  const int8_t[::1] ok=None):
        cdef Py_ssize_t k
        if submit_s.shape[0] != duration_s.shape[0]:
            raise ValueError("submit_s and duration_s must have the same length")
        if ok is not None and ok.shape[0] != submit_s.shape[0]:
            raise ValueError("ok needs one flag per job")
        self.n = <int>submit_s.shape[0]
        self.submit = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.duration = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.ok = <int8_t*>malloc(max(self.n, 1) * sizeof(int8_t))
        if self.submit == NULL or self.duration == NULL or self.ok == NULL:
            raise MemoryError()
        for k in range(self.n):
            if k > 0 and submit_s[k] < submit_s[k - 1]:
                raise ValueError(f"submit times must be sorted (slot {k})")
            self.submit[k] = submit_s[k]
            self.duration[k] = duration_s[k]
            self.ok[k] = 1 if ok is None else (1 if ok[k] else 0)
        self.cursor = 0
        self.series_dt = -1
        self.last_s = -1
        self.next_bf_s = NEVER
        self.last_bf_s = -1

    def __dealloc__(self):
        free(self.submit); free(self.duration); free(self.ok)
        free(self.rows); free(self.rate)
        free(self.ev_t); free(self.ev_fail); free(self.ev_node); free(self.ev_repair); free(self.up_at)
        heap_release(&self.done)

    def set_node_events(self, const int64_t[::1] t, const int8_t[::1] failing,
                        const int32_t[::1] node, const int64_t[::1] repair_s, int n_nodes):
        """Node failures (failing 1, with the time the node is repaired) and
        repairs (failing 0), sorted by time with repairs first at one instant.
        A failing node goes down and its jobs are requeued or fail
        (ClusterState.fail_node); overlapping outages of one node end at the
        last repair; an OFF node cannot fail."""
        cdef Py_ssize_t k, m = t.shape[0]
        if failing.shape[0] != m or node.shape[0] != m or repair_s.shape[0] != m:
            raise ValueError("one failing flag, node and repair time per event")
        for k in range(1, m):
            if t[k] < t[k - 1] or (t[k] == t[k - 1] and failing[k] < failing[k - 1]):
                raise ValueError(f"node events must be sorted (event {k})")
        self.ev_t = <int64_t*>malloc(max(m, 1) * sizeof(int64_t))
        self.ev_fail = <int8_t*>malloc(max(m, 1) * sizeof(int8_t))
        self.ev_node = <int32_t*>malloc(max(m, 1) * sizeof(int32_t))
        self.ev_repair = <int64_t*>malloc(max(m, 1) * sizeof(int64_t))
        self.up_at = <int64_t*>malloc(max(n_nodes, 1) * sizeof(int64_t))
        if (self.ev_t == NULL or self.ev_fail == NULL or self.ev_node == NULL
                or self.ev_repair == NULL or self.up_at == NULL):
            raise MemoryError()
        for k in range(m):
            if not 0 <= node[k] < n_nodes:
                raise ValueError(f"node event {k}: node {node[k]} out of range")
            self.ev_t[k] = t[k]
            self.ev_fail[k] = failing[k]
            self.ev_node[k] = node[k]
            self.ev_repair[k] = repair_s[k]
        for k in range(n_nodes):
            self.up_at[k] = -1
        self.n_ev = <int>m
        self.ev_next = 0
        self.n_up_at = n_nodes

    def set_slurm_compat(self, int64_t reaction_s, int64_t backfill_interval_s):
        """Time the passes as Slurm does (the policy's ``[slurm_compat]``).

        ``reaction_s``: an arrival or a job's end reaches the scheduler that
        many seconds after it happens: the job is queued, or its cores are
        free for others, from then on (its end time stays the real one), so the
        first pass that can act on it runs no sooner. Each event has its own
        delay: Slurm's main scheduler reacts to each submission and completion
        a second or so later (measured on Slurm 22.05), and a pass an earlier
        event called for does not see a later one sooner. Node events and begin
        times are not delayed.
        ``backfill_interval_s``: the pass backfills (EASY or conservative) only
        at the multiples of it (every step in such a second); the passes in
        between start jobs in strict queue order (Slurm's main scheduler; its
        backfill scheduler wakes every bf_interval). A multiple is visited only
        when a step ran since the last backfill pass and a job is pending: with
        nothing changed, a later backfill pass could start nothing the earlier
        one did not (time alone only shrinks the window before a reservation).
        0 and 0 give the plain replay, step for step. Set before the first step.
        """
        if reaction_s < 0 or backfill_interval_s < 0:
            raise ValueError("reaction_s and backfill_interval_s must be >= 0")
        self.reaction_s = reaction_s
        self.bf_interval_s = backfill_interval_s
        self.next_bf_s = NEVER
        self.last_bf_s = -1
        self.bf_dirty = 1

    cdef int _node_events(self, ClusterState state, int64_t now) except -1:
        """Apply the node failures and repairs due at ``now``."""
        cdef int n
        while self.ev_next < self.n_ev and self.ev_t[self.ev_next] <= now:
            n = self.ev_node[self.ev_next]
            if n >= state.n_nodes:
                raise ValueError(f"node {n} out of range")
            if self.ev_fail[self.ev_next]:
                if self.up_at[n] < 0 and state.node_state[n] != NODE_OFF:
                    if state._fail_node(n, now) < 0:
                        raise MemoryError()
                    self.up_at[n] = self.ev_repair[self.ev_next]
                elif self.up_at[n] >= 0 and self.ev_repair[self.ev_next] > self.up_at[n]:
                    self.up_at[n] = self.ev_repair[self.ev_next]
            elif self.up_at[n] >= 0 and self.ev_t[self.ev_next] >= self.up_at[n]:
                if state.node_state[n] == NODE_DOWN:
                    _node_to(state, n, NODE_UP, now)
                self.up_at[n] = -1
            self.ev_next += 1
        return 0

    cpdef int64_t next_time(self):
        """Time of the next arrival or completion; -1 when there is none."""
        cdef int64_t t = NEVER
        if self.cursor < self.n:
            t = self.submit[self.cursor] + self.reaction_s
        if self.done.n > 0 and self.done.t[0] + self.reaction_s < t:
            t = self.done.t[0] + self.reaction_s
        return -1 if t == NEVER else t

    cdef int _apply(self, ClusterState state, int64_t now) except -1:
        """Completions due at ``now``, then arrivals at ``now``, into the state."""
        cdef int j, count = 0
        cdef int64_t end
        while self.done.n > 0 and self.done.t[0] + self.reaction_s <= now:
            end = self.done.t[0]
            j = heap_pop(&self.done)
            # a job requeued (its node failed) left a completion that no longer holds
            if (state.job_state[j] != JS_RUNNING
                    or state.start_s[j] + self.duration[j] - state.done_s[j] != end):
                continue
            state.finish(j, now, self.ok[j])
            state.end_s[j] = end  # (seen reaction_s late: it ended when it ended)
            count += 1
        while self.cursor < self.n and self.submit[self.cursor] + self.reaction_s <= now:
            # (a job cancelled before its submit time never arrives)
            if state.job_state[self.cursor] == JS_NEW and state._arrive(self.cursor, now) != 0:
                raise MemoryError()
            self.cursor += 1
            count += 1
        self.n_events += count
        return count

    cpdef int64_t step(self, ClusterState state, int64_t now) except -2:
        """One simulation step at ``now``: events, one pass, completions of the
        jobs it started. Returns the next time something happens: an event,
        or a held job's think time ending (-1: the replay is over)."""
        cdef int64_t t, w
        self.last_s = now
        if self.ev_next < self.n_ev:
            self._node_events(state, now)
        self._apply(state, now)
        _complete_boots(state, now)
        if self.bf_interval_s == 0:
            self._pass(state, now)
        else:
            self._timed_pass(state, now)
        if self.series_dt >= 0:
            self._record_row(state, now)
        t = self.next_time()
        if t < 0 and state.n_pending == 0 and state.begin_heap.n == 0:
            return -1  # every job has ended: nothing left to serve, no failure matters
        if self.ev_next < self.n_ev and (t < 0 or self.ev_t[self.ev_next] < t):
            t = self.ev_t[self.ev_next]
        w = state._wakeup()
        if w != NEVER and (t < 0 or w < t):
            t = w
        if self.bf_interval_s > 0:
            t = self._with_bf_timer(state, t)
        return t

    cdef int _pass(self, ClusterState state, int64_t now) except -1:
        """One scheduling pass at ``now`` and the autoscaler's decisions after it."""
        state.schedule(now)
        self._record_starts(state, now)
        if state.as_on:
            if _autoscale(state, now) != 0:
                raise MemoryError()
            while state.n_as_booted and state.as_boot_s == 0:
                # up at once: use them now, and decide again on what still waits
                # (the pool is bounded, so this ends)
                state.schedule(now)
                self._record_starts(state, now)
                if _autoscale(state, now) != 0:
                    raise MemoryError()
        return 0

    cdef int _timed_pass(self, ClusterState state, int64_t now) except -1:
        """The pass of a step with a backfill interval: 1 a backfill pass ran,
        0 a main pass (strict queue order) ran."""
        cdef int saved
        if state.backfill == BF_NONE:
            self._pass(state, now)
            return 0
        if self.next_bf_s == NEVER or self.next_bf_s < now:
            # multiples passed without a step changed nothing a cycle could use
            self.next_bf_s = (now + self.bf_interval_s - 1) // self.bf_interval_s * self.bf_interval_s
        if now == self.next_bf_s or now == self.last_bf_s:
            # the backfill scheduler's cycle: every pending job is a candidate
            # (every step in the cycle's second: a job that ends at once frees
            # its cores within the cycle)
            if now == self.next_bf_s:
                self.next_bf_s += self.bf_interval_s
            self.last_bf_s = now
            self.bf_dirty = 0
            state.need_full_pass = 1
            self._pass(state, now)
            return 1
        self.bf_dirty = 1
        saved = state.backfill
        state.backfill = BF_NONE  # the main scheduler: strict queue order
        try:
            self._pass(state, now)
        finally:
            state.backfill = saved
            state.resv_complete = 0  # (the last profile no longer holds for queries)
        return 0

    cdef inline int64_t _with_bf_timer(self, ClusterState state, int64_t t) noexcept:
        """``t``, or the next backfill cycle when it comes first and matters."""
        if (self.bf_dirty and state.backfill != BF_NONE and state.n_pending > 0
                and self.next_bf_s != NEVER and (t < 0 or self.next_bf_s < t)):
            return self.next_bf_s
        return t

    cpdef int64_t advance(self, ClusterState state, int64_t now) except -2:
        """``step`` at ``now``, then at each following time that can decide
        nothing, without returning; the next time as ``step`` gives it.

        A time decides nothing when all it holds is completions and nothing is
        queued: no arrival, node event or wakeup falls on it, no job depends
        on another (an end could release a dependent), there is no advance
        reservation and no autoscaler. The pass there sees an empty queue.
        Those steps run exactly as ``step`` would run them, in the same order
        at the same times; only the driver does not wake up for them (on
        HPC2N, 40% of the steps). ``last_s`` is the time of the last step.
        """
        cdef int64_t t = self.step(state, now)
        while t >= 0 and self._quiet(state, t):
            t = self.step(state, t)
            self.n_quiet += 1
        return t

    cdef inline bint _quiet(self, ClusterState state, int64_t t) noexcept:
        """Whether the step at ``t`` (the next time) can decide nothing."""
        return (state.n_pending == 0
                and state.n_edges == 0
                and state.n_resv == 0
                and not state.as_on
                and (self.cursor >= self.n or self.submit[self.cursor] + self.reaction_s > t)
                and (self.ev_next >= self.n_ev or self.ev_t[self.ev_next] > t))

    cdef int _record_row(self, ClusterState state, int64_t now) except -1:
        """The state after the step at ``now`` as one time-series row (replacing
        the last row when it is less than series_dt old)."""
        cdef int64_t* row
        cdef int cap
        if self.n_rows == 0 or now - self.rows[(self.n_rows - 1) * SERIES_COLS] >= max(self.series_dt, 1):
            cap = self.cap_rows
            if _reserve(<void**>&self.rows, &cap, self.n_rows + 1, SERIES_COLS * sizeof(int64_t)) != 0:
                raise MemoryError()
            if _reserve(<void**>&self.rate, &self.cap_rate, self.n_rows + 1, sizeof(double)) != 0:
                raise MemoryError()
            self.cap_rows = cap
            self.n_rows += 1
        row = &self.rows[(self.n_rows - 1) * SERIES_COLS]
        row[0] = now
        row[1] = state.n_pending
        row[2] = state.n_run
        row[3] = state.run_cores
        row[4] = state.total_cap[RES_CORES]
        row[5] = state.n_in_state[NODE_UP] - state.n_busy_up
        row[6] = state.n_busy_up
        row[7] = state.n_in_state[NODE_BOOTING]
        row[8] = state.n_in_state[NODE_DRAINING]
        row[9] = state.n_in_state[NODE_DOWN]
        row[10] = state.n_in_state[NODE_OFF]
        self.rate[self.n_rows - 1] = state.on_rate
        return 0

    def series(self):
        """(columns, price per hour): the recorded time series, one row of
        ``columns`` per SERIES_COLUMNS entry (column-major, so that each
        becomes a frame column without a transposing copy)."""
        out = np.empty((SERIES_COLS, self.n_rows), dtype=np.int64)
        rate = np.empty(self.n_rows, dtype=np.float64)
        cdef int64_t[:, ::1] v = out
        cdef double[::1] vr = rate
        cdef Py_ssize_t i, c
        for c in range(SERIES_COLS):
            for i in range(self.n_rows):
                v[c, i] = self.rows[i * SERIES_COLS + c]
        if self.n_rows:
            memcpy(&vr[0], self.rate, self.n_rows * sizeof(double))
        return out, rate

    cdef int _record_starts(self, ClusterState state, int64_t now) except -1:
        """Schedule the completion of every job the last pass started."""
        cdef int k, j
        for k in range(state.n_started):
            j = state.started[k]
            if heap_push(&self.done, now + self.duration[j] - state.done_s[j], j) != 0:
                raise MemoryError()
        return state.n_started
