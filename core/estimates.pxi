# The whole queue's start estimates, reasons and priorities at once, computed
# off the scheduling loop. Included by _core.pyx.
#
# Why: a start estimate per job walks the queue up to that job, giving each
# job ahead its reservation, so Q estimates cost O(Q^2) walks, and a live
# driver answers them while it holds the state. Here one walk of the queue in
# order gives every job its estimate (each job ahead takes its reservation,
# as Slurm's estimate does): one conservative pass, O(Q (blocks +
# PROFILE_BLOCK)). And the walk runs on a copy: ``QueueSnapshot(state, now)``
# copies what the estimates need (queue order, needs, walltimes, running
# jobs' requested ends, free resources per partition, advance reservations'
# windows) in one O(queue + running) step, under whatever lock guards the
# state; ``estimate_starts()`` then needs no lock and runs with the GIL
# released, so the state's owner keeps scheduling meanwhile.
#
# The reasons (why_pending) and priorities (priority_factors) need only one
# O(queue) walk with the limits' counters, so they are taken with the copy.
# Every answer is the one ``ClusterState.estimate_start``, ``why_pending`` and
# ``priority_factors`` give for the same job at the same time (the tests
# compare them on random queues).
#
# Assumes, as ``Kernel`` checks, that every job's partition exists.


cdef class QueueSnapshot:
    """Pending and held jobs of a state, as of ``now``, and what their start
    estimates need; entries ``[0, n_pending)`` are the queue in order, then the
    held jobs by slot."""

    cdef readonly int64_t now
    cdef readonly int n_pending
    cdef readonly int n_held
    cdef readonly object slots          # int32 per entry: the kernel's job slot
    cdef readonly object job_ids        # int64 per entry
    cdef readonly object reasons        # int8 per entry: REASONS code
    cdef readonly object priorities     # float64 per entry
    cdef readonly object factors        # float64 (entries, N_FACTORS), FACTOR_NAMES order
    cdef int32_t[::1] slot_v
    cdef int n_part
    cdef int reuse_resv                 # the last conservative pass's reservations stand
    # per pending entry
    cdef int64_t[:, ::1] need_v
    cdef int64_t[::1] wall_v
    cdef int32_t[::1] part_v
    cdef int8_t[::1] takes_v            # takes its reservation for the jobs behind it
    cdef int64_t[::1] resv_v            # the last pass's reservation, -1 none
    # per partition: free resources of its UP nodes
    cdef int64_t[:, ::1] free_v
    # running jobs by requested end
    cdef int n_run
    cdef int64_t[::1] run_end_v
    cdef int64_t[:, ::1] run_need_v
    cdef int32_t[::1] run_part_v
    # advance reservations' windows, taken from the profile in _build_profile's order
    cdef int n_take
    cdef int64_t[::1] take_s_v
    cdef int64_t[::1] take_e_v
    cdef int64_t[:, ::1] take_amt_v
    cdef int32_t[::1] take_part_v

    def __cinit__(self, ClusterState st, int64_t now):
        cdef int j, k, pos, n_held = 0, m, n, r
        cdef double f[5]
        if st._run_sorted() != 0:
            raise MemoryError()
        self.now = now
        self.n_part = st.n_part
        self.reuse_resv = (st.backfill == BF_CONSERVATIVE and st.resv_complete
                           and not st.need_full_pass)
        for j in range(st.n_jobs):
            if st.job_state[j] == JS_HELD:
                n_held += 1
        self.n_pending = st.n_pending
        self.n_held = n_held
        m = st.n_pending + n_held
        self.slots = np.empty(m, dtype=np.int32)
        self.job_ids = np.empty(m, dtype=np.int64)
        self.reasons = np.empty(m, dtype=np.int8)
        self.priorities = np.empty(m, dtype=np.float64)
        self.factors = np.empty((m, N_FACTORS), dtype=np.float64)
        cdef int32_t[::1] slot = self.slots
        cdef int64_t[::1] ids = self.job_ids
        cdef int8_t[::1] why = self.reasons
        cdef double[::1] prio = self.priorities
        cdef double[:, ::1] fac = self.factors
        self.slot_v = slot
        k = 0
        for pos in range(st.q_begin, st.q_end):
            if st.q[pos].job_idx >= 0:
                slot[k] = st.q[pos].job_idx
                k += 1
        for j in range(st.n_jobs):
            if st.job_state[j] == JS_HELD:
                slot[k] = j
                why[k] = st.hold_why[j]
                k += 1
        for k in range(m):
            j = slot[k]
            ids[k] = st.jobs[j].job_id
            prio[k] = _mf_priority(st, j, now, f)
            for r in range(N_FACTORS):
                fac[k, r] = f[r]
        n = self.n_pending
        self.need_v = np.empty((n, N_RES), dtype=np.int64)
        self.wall_v = np.empty(n, dtype=np.int64)
        self.part_v = np.empty(n, dtype=np.int32)
        self.takes_v = np.empty(n, dtype=np.int8)
        self.resv_v = np.empty(n, dtype=np.int64)
        for k in range(n):
            j = slot[k]
            for r in range(N_RES):
                self.need_v[k, r] = st.need[j * N_RES + r]
            self.wall_v[k] = st.jobs[j].walltime_s
            self.part_v[k] = st.jobs[j].part_idx if st.n_part > 1 else 0
            self.resv_v[k] = st.reserved_s[j]
        self._walk_limits(st, why)
        self._copy_running(st)
        self._copy_windows(st)

    cdef void _walk_limits(self, ClusterState st, int8_t[::1] why) except *:
        """Each pending job's reason (as why_pending) and whether it takes a
        reservation in the estimate walk (as estimate_start's walk decides for
        the jobs ahead): one walk per partition with the limits' counters."""
        cdef int p, k, j, first, examined, limit, r, live
        cdef int64_t saved_now = st.cur_now
        cdef int64_t* cap
        for p in range(self.n_part):
            st._reset_seen()
            first = -1
            examined = 0
            for k in range(self.n_pending):
                if self.part_v[k] != p:
                    continue
                j = self.slot_v[k]
                examined += 1
                limit = st._visit_limit(j)
                cap = &st.total_cap[0] if st.n_part == 1 else &st.part_cap[p * N_RES]
                why[k] = 0
                for r in range(N_RES):
                    if st.need[j * N_RES + r] > cap[r]:
                        why[k] = WHY_NODE_DOWN
                if why[k]:
                    pass
                elif limit:
                    why[k] = limit
                elif first < 0:
                    why[k] = WHY_RESOURCES
                    if st.n_live_resv and not st._fits_now(j):
                        live = st.n_live_resv
                        st.n_live_resv = 0
                        if st._fits_now(j):
                            why[k] = WHY_RESERVATION
                        st.n_live_resv = live
                elif st.bf_depth > 0 and examined > st.bf_depth and st.backfill != BF_NONE:
                    why[k] = WHY_BACKFILL_DEPTH
                else:
                    why[k] = WHY_PRIORITY
                if not limit and first < 0:
                    first = j
                # estimate_start runs at its own ``now``: the advance reservation a
                # job may use is judged then
                st.cur_now = self.now
                self.takes_v[k] = not limit and st._owner_resv(j) < 0
                st.cur_now = saved_now

    cdef void _copy_running(self, ClusterState st) except *:
        """Free resources per partition, and the running jobs by requested end."""
        cdef int p, r, i, j
        self.free_v = np.empty((self.n_part, N_RES), dtype=np.int64)
        for p in range(self.n_part):
            for r in range(N_RES):
                self.free_v[p, r] = (st.total_free[r] if st.n_part == 1
                                     else st.part_free[p * N_RES + r])
        self.n_run = st.n_run
        self.run_end_v = np.empty(st.n_run, dtype=np.int64)
        self.run_need_v = np.empty((st.n_run, N_RES), dtype=np.int64)
        self.run_part_v = np.empty(st.n_run, dtype=np.int32)
        for i in range(st.n_run):
            j = st.run[i].job_idx
            self.run_end_v[i] = st.run[i].end_req_s
            self.run_part_v[i] = st.jobs[j].part_idx if st.n_part > 1 else 0
            for r in range(N_RES):
                self.run_need_v[i, r] = st.need[j * N_RES + r]

    cdef void _copy_windows(self, ClusterState st) except *:
        """The advance reservations' takes from each partition's profile, in the
        order ``_build_profile`` makes them: what is free on the reserved nodes
        over the window, then what each running job releases there before the
        window ends, from its requested end on."""
        cdef int p, k, i, j, n, a, r, count = 0, fill
        cdef AdvanceResv* R
        cdef int64_t t, ws
        for fill in range(2):
            if fill:
                self.take_s_v = np.empty(count, dtype=np.int64)
                self.take_e_v = np.empty(count, dtype=np.int64)
                self.take_amt_v = np.zeros((count, N_RES), dtype=np.int64)
                self.take_part_v = np.empty(count, dtype=np.int32)
                self.n_take = count
                count = 0
            for p in range(self.n_part):
                for k in range(st.n_resv):
                    R = &st.resv[k]
                    if R.end_s <= self.now:
                        continue
                    ws = R.start_s if R.start_s > self.now else self.now
                    if fill:
                        self.take_s_v[count] = ws
                        self.take_e_v[count] = R.end_s
                        self.take_part_v[count] = p
                        for n in range(st.n_nodes):
                            if (R.on_node[n] and st.node_state[n] == NODE_UP
                                    and (st.n_part == 1 or st.node_part[n] == p)):
                                for r in range(N_RES):
                                    self.take_amt_v[count, r] += st.node_free[n * N_RES + r]
                    count += 1
                    for i in range(st.n_run):
                        j = st.run[i].job_idx
                        t = st.run[i].end_req_s
                        if t >= R.end_s or (st.n_part > 1 and st.jobs[j].part_idx != p):
                            continue
                        if fill:
                            self.take_s_v[count] = t if t > ws else ws
                            self.take_e_v[count] = R.end_s
                            self.take_part_v[count] = p
                            for a in range(st.alloc_off[j], st.alloc_off[j] + st.alloc_cnt[j]):
                                n = st.alloc[a].node_idx
                                if R.on_node[n] and st.node_state[n] == NODE_UP:
                                    for r in range(N_RES):
                                        self.take_amt_v[count, r] += (
                                            st.alloc[a].n_tasks * st.jobs[j].per_task[r])
                        count += 1

    cdef int _build(self, Profile* P, int p) noexcept nogil:
        """Partition ``p``'s profile, as ClusterState._build_profile builds it."""
        cdef int i = 0, k, r
        cdef int64_t t
        cdef int64_t cur[4]
        prof_clear(P)
        for r in range(N_RES):
            cur[r] = self.free_v[p, r]
        while i < self.n_run and self.run_end_v[i] <= self.now:
            if self.run_part_v[i] == p:
                for r in range(N_RES):
                    cur[r] += self.run_need_v[i, r]
            i += 1
        if prof_append(P, self.now, cur) != 0:
            return -1
        while i < self.n_run:
            t = self.run_end_v[i]
            while i < self.n_run and self.run_end_v[i] == t:
                if self.run_part_v[i] == p:
                    for r in range(N_RES):
                        cur[r] += self.run_need_v[i, r]
                i += 1
            if prof_append(P, t, cur) != 0:
                return -1
        for k in range(self.n_take):
            if self.take_part_v[k] == p:
                if prof_take(P, self.take_s_v[k], self.take_e_v[k], &self.take_amt_v[k, 0]) != 0:
                    return -1
        return 0

    cdef int _walk(self, int64_t* out) noexcept nogil:
        """Every pending job's estimate, in one walk of each partition's queue."""
        cdef Profile P
        cdef int p, k, rc = 0
        cdef int64_t s
        memset(&P, 0, sizeof(Profile))
        for p in range(self.n_part):
            if self._build(&P, p) != 0:
                rc = -1
                break
            for k in range(self.n_pending):
                if self.part_v[k] != p:
                    continue
                s = prof_earliest(&P, &self.need_v[k, 0], self.wall_v[k], self.now)
                out[k] = -1 if s == NEVER else s
                if self.reuse_resv and self.resv_v[k] >= 0:
                    out[k] = self.resv_v[k] if self.resv_v[k] > self.now else self.now
                if self.takes_v[k] and s != NEVER:
                    if prof_take(&P, s, s + self.wall_v[k], &self.need_v[k, 0]) != 0:
                        rc = -1
                        break
            if rc != 0:
                break
        prof_release(&P)
        return rc

    def estimate_starts(self):
        """Estimated start of each pending entry (queue order), -1 if it never fits.

        Reads only the copy, with the GIL released: call it from any thread,
        without the lock the state needs, as often as wanted."""
        out = np.empty(self.n_pending, dtype=np.int64)
        cdef int64_t[::1] v = out
        cdef int rc = 0
        if self.n_pending:
            with nogil:
                rc = self._walk(&v[0])
        if rc != 0:
            raise MemoryError("estimating start times ran out of memory")
        return out
