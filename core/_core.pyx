# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The scheduling kernel: cluster state in C arrays and one scheduling pass.

Worked example (4 one-core nodes, EASY, all times in seconds)::

    job  submit  cores  walltime  run
    A    0       2      100       100
    B    0       4      50        50
    C    0       2      60        60

    t=0: A starts (2 free left). B needs 4: it is the head; the shadow time is
         A's requested end, 100, when 4 cores are free; extra = 4 - 4 = 0.
         C fits now (2 cores) but would end at 60 <= 100: it backfills.
    t=60: C ends; B still does not fit (2 free).  t=100: A ends, B starts.

The same workload under ``none`` (no backfill) starts C only at t=150, and under
``conservative`` C gets the same start as EASY here (its reservation at t=0
does not delay B's at t=100).

Drivers (the SimPy simulator, the live agent) feed events by job *slot index*
(``job_idx``, a position in this state) and call ``schedule(now)`` once per
distinct event time; decisions are read back from the ``started`` buffer.
No clock is read here and no I/O is done: time is the caller's ``now``.
"""

cimport cython
from libc.stdint cimport INT64_MAX, int8_t, int32_t, int64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memmove, memset

import numpy as np

cdef int64_t NEVER = INT64_MAX

cdef JobSpec _spec_example
memset(&_spec_example, 0, sizeof(JobSpec))
JOB_SPEC_DTYPE = np.asarray(<JobSpec[:1]>(&_spec_example)).dtype
"""NumPy dtype of ``JobSpec``, derived from the C struct (one source of truth)."""

N_RESOURCES = N_RES
RESOURCE_NAMES = ("cores", "mem_mib", "gpus", "scratch_mib")
ORDERS = {"fcfs": ORDER_FCFS, "sjf": ORDER_SJF, "priority": ORDER_PRIORITY}
BACKFILLS = {"none": BF_NONE, "easy": BF_EASY, "conservative": BF_CONSERVATIVE}
PLACEMENTS = {"first_fit": PLACE_FIRST_FIT, "best_fit": PLACE_BEST_FIT, "spread": PLACE_SPREAD}
JOB_STATES = {
    "new": JS_NEW, "pending": JS_PENDING, "held": JS_HELD, "running": JS_RUNNING,
    "ended": JS_ENDED, "cancelled": JS_CANCELLED,
}
REASONS = {
    "None": WHY_NONE, "Priority": WHY_PRIORITY, "Resources": WHY_RESOURCES,
    "Dependency": WHY_DEPENDENCY, "BeginTime": WHY_BEGIN_TIME, "QOSLimit": WHY_QOS_LIMIT,
    "UserLimit": WHY_USER_LIMIT, "GroupLimit": WHY_GROUP_LIMIT,
    "Reservation": WHY_RESERVATION, "NodeDown": WHY_NODE_DOWN, "Held": WHY_HELD,
    "NotPending": WHY_NOT_PENDING, "BackfillDepth": WHY_BACKFILL_DEPTH,
}
NODE_STATES = {"up": NODE_UP, "booting": NODE_BOOTING, "draining": NODE_DRAINING, "down": NODE_DOWN}


# ---------------------------------------------------------------- small helpers

cdef int _reserve(void** ptr, int* cap, Py_ssize_t need, size_t elsize) noexcept nogil:
    """Grow ``*ptr`` to hold at least ``need`` elements (doubling). 0 on success."""
    cdef Py_ssize_t new_cap
    cdef void* p
    if need <= cap[0]:
        return 0
    new_cap = cap[0] * 2 if cap[0] > 0 else 16
    while new_cap < need:
        new_cap *= 2
    p = realloc(ptr[0], new_cap * elsize)
    if p == NULL:
        return -1
    ptr[0] = p
    cap[0] = <int>new_cap
    return 0


cdef inline int _qcmp(const QEntry* a, const QEntry* b) noexcept nogil:
    """Queue order: (key, submit_s, job_id); ties end on the job's slot index."""
    if a.key != b.key:
        return -1 if a.key < b.key else 1
    if a.submit_s != b.submit_s:
        return -1 if a.submit_s < b.submit_s else 1
    if a.job_id != b.job_id:
        return -1 if a.job_id < b.job_id else 1
    return 0


cdef int _qsort_cmp(const void* a, const void* b) noexcept nogil:
    cdef int c = _qcmp(<const QEntry*>a, <const QEntry*>b)
    if c != 0:
        return c
    return (<const QEntry*>a).job_idx - (<const QEntry*>b).job_idx


cdef inline int _ge(const int64_t* have, const int64_t* want) noexcept nogil:
    """have >= want on every resource."""
    cdef int r
    for r in range(N_RES):
        if have[r] < want[r]:
            return 0
    return 1


include "profile.pxi"


# ---------------------------------------------------------------- the state

cdef class ClusterState:
    """Cluster state and scheduling passes (see module docstring and _core.pxd)."""

    def __cinit__(self, const int64_t[:, ::1] node_capacity):
        cdef int n, r
        if node_capacity.shape[1] != N_RES:
            raise ValueError(f"node_capacity needs {N_RES} columns, got {node_capacity.shape[1]}")
        self.n_nodes = <int>node_capacity.shape[0]
        self.node_cap = <int64_t*>malloc(max(self.n_nodes, 1) * N_RES * sizeof(int64_t))
        self.node_free = <int64_t*>malloc(max(self.n_nodes, 1) * N_RES * sizeof(int64_t))
        self.node_state = <int8_t*>malloc(max(self.n_nodes, 1) * sizeof(int8_t))
        if self.node_cap == NULL or self.node_free == NULL or self.node_state == NULL:
            raise MemoryError()
        for r in range(N_RES):
            self.total_free[r] = 0
            self.total_cap[r] = 0
            self.extra[r] = 0
        for n in range(self.n_nodes):
            self.node_state[n] = NODE_UP
            for r in range(N_RES):
                self.node_cap[n * N_RES + r] = node_capacity[n, r]
                self.node_free[n * N_RES + r] = node_capacity[n, r]
                self.total_free[r] += node_capacity[n, r]
                self.total_cap[r] += node_capacity[n, r]
        self.first_free_node = 0
        self.order = ORDER_FCFS
        self.backfill = BF_EASY
        self.placement = PLACE_FIRST_FIT
        self.bf_depth = 0
        self.need_full_pass = 1
        self.head_idx = -1
        self.shadow_s = NEVER
        self.min_resv_s = NEVER

    def __dealloc__(self):
        free(self.node_cap); free(self.node_free); free(self.node_state)
        free(self.jobs); free(self.need); free(self.simple); free(self.job_state)
        free(self.start_s); free(self.end_s); free(self.reserved_s)
        free(self.alloc_off); free(self.alloc_cnt); free(self.alloc)
        free(self.q); free(self.run); free(self.started); free(self.fresh)
        free(self.user_running); free(self.user_cores)
        prof_release(&self.prof)
        free(self.suffix_min)

    # ------------------------------------------------------------ configuration

    def configure(self, int order, int backfill, int placement, int bf_depth):
        """Set the policy knobs; the next pass rescans everything."""
        if order not in (ORDER_FCFS, ORDER_SJF, ORDER_PRIORITY):
            raise ValueError(f"unknown order code {order}")
        if backfill not in (BF_NONE, BF_EASY, BF_CONSERVATIVE):
            raise ValueError(f"unknown backfill code {backfill}")
        if placement not in (PLACE_FIRST_FIT, PLACE_BEST_FIT, PLACE_SPREAD):
            raise ValueError(f"unknown placement code {placement}")
        if bf_depth < 0:
            raise ValueError("bf_depth must be >= 0")
        cdef int reorder = order != self.order
        self.order = order
        self.backfill = backfill
        self.placement = placement
        self.bf_depth = bf_depth
        self.need_full_pass = 1
        if reorder:
            self._rekey_queue()

    def set_user_limits(self, int64_t max_jobs_per_user, int64_t max_cores_per_user):
        """Per-user caps on running jobs and on cores held (0: no cap).

        A job that would exceed its user's cap is passed over: it is not the
        head, gets no reservation, and its reason is UserLimit.
        """
        if max_jobs_per_user < 0 or max_cores_per_user < 0:
            raise ValueError("user limits must be >= 0")
        self.max_jobs_per_user = max_jobs_per_user
        self.max_cores_per_user = max_cores_per_user
        self.need_full_pass = 1

    @property
    def n_nodes(self):
        return self.n_nodes

    @property
    def n_jobs(self):
        return self.n_jobs

    @property
    def n_pending(self):
        return self.n_pending

    @property
    def n_running(self):
        return self.n_run

    @property
    def n_started(self):
        return self.n_started

    # ------------------------------------------------------------ jobs

    def add_jobs(self, const JobSpec[::1] specs):
        """Register jobs (state NEW); returns the slot index of the first one.

        Validation is the caller's (``htcsim.kernel``): n_tasks >= 1,
        walltime_s >= 1, per_task >= 0 with at least one core per task.
        """
        cdef Py_ssize_t k, m = specs.shape[0]
        cdef int first = self.n_jobs, j, r, simple
        if self._grow_jobs(self.n_jobs + m) != 0:
            raise MemoryError()
        for k in range(m):
            j = first + <int>k
            self.jobs[j] = specs[k]
            simple = 1 if specs[k].per_task[RES_CORES] == 1 else 0
            for r in range(N_RES):
                self.need[j * N_RES + r] = specs[k].per_task[r] * specs[k].n_tasks
                if r != RES_CORES and specs[k].per_task[r] != 0:
                    simple = 0
            self.simple[j] = <int8_t>simple
            self.job_state[j] = JS_NEW
            self.start_s[j] = -1
            self.end_s[j] = -1
            self.reserved_s[j] = -1
            self.alloc_off[j] = 0
            self.alloc_cnt[j] = 0
        self.n_jobs = first + <int>m
        for k in range(m):
            if specs[k].user_idx >= self.n_users:
                if self._grow_users(specs[k].user_idx + 1) != 0:
                    raise MemoryError()
        return first

    cdef int _grow_users(self, int n) noexcept nogil:
        cdef int u, cap = self.n_users
        if _reserve(<void**>&self.user_running, &cap, n, sizeof(int64_t)) != 0:
            return -1
        cap = self.n_users
        if _reserve(<void**>&self.user_cores, &cap, n, sizeof(int64_t)) != 0:
            return -1
        for u in range(self.n_users, n):
            self.user_running[u] = 0
            self.user_cores[u] = 0
        self.n_users = n
        return 0

    cdef int _grow_jobs(self, Py_ssize_t need) noexcept nogil:
        cdef int cap
        if need <= self.cap_jobs:
            return 0
        cap = self.cap_jobs
        if _reserve(<void**>&self.jobs, &cap, need, sizeof(JobSpec)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.need, &cap, need, N_RES * sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.simple, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.job_state, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.start_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.end_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.reserved_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.alloc_off, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.alloc_cnt, &cap, need, sizeof(int32_t)) != 0: return -1
        self.cap_jobs = cap
        return 0

    def set_priorities(self, const int32_t[::1] job_idx, const double[::1] priority):
        """Set the ORDER_PRIORITY key of jobs; the queue is re-sorted once."""
        cdef Py_ssize_t k
        if job_idx.shape[0] != priority.shape[0]:
            raise ValueError("job_idx and priority must have the same length")
        for k in range(job_idx.shape[0]):
            self._check_idx(job_idx[k])
            self.jobs[job_idx[k]].priority = priority[k]
        if self.order == ORDER_PRIORITY:
            self._rekey_queue()
            self.need_full_pass = 1

    cdef void _check_idx(self, int j) except *:
        if j < 0 or j >= self.n_jobs:
            raise IndexError(f"job slot {j} out of range (0..{self.n_jobs - 1})")

    cdef void _entry_of(self, int j, QEntry* e) noexcept nogil:
        cdef JobSpec* s = &self.jobs[j]
        if self.order == ORDER_FCFS:
            e.key = 0.0
        elif self.order == ORDER_SJF:
            e.key = <double>s.walltime_s
        else:
            e.key = -s.priority
        e.submit_s = s.submit_s
        e.job_id = s.job_id
        e.job_idx = j
        e._pad = 0

    # ------------------------------------------------------------ events

    cpdef int submit(self, int j, int64_t now) except -1:
        """A job enters the pending queue."""
        self._check_idx(j)
        if self.job_state[j] != JS_NEW:
            raise ValueError(f"job slot {j} was already submitted")
        if self._submit(j) != 0:
            raise MemoryError()
        return 0

    cdef int _submit(self, int j) noexcept nogil:
        cdef QEntry e
        cdef int pos
        self._entry_of(j, &e)
        if self.q_end == self.q_cap:
            self._compact_queue()
            if self.q_end == self.q_cap:
                if _reserve(<void**>&self.q, &self.q_cap, self.q_end + 1, sizeof(QEntry)) != 0:
                    return -1
        pos = self._upper_bound(&e)
        if pos < self.q_end:
            memmove(&self.q[pos + 1], &self.q[pos], (self.q_end - pos) * sizeof(QEntry))
        self.q[pos] = e
        self.q_end += 1
        self.n_pending += 1
        self.job_state[j] = JS_PENDING
        if _reserve(<void**>&self.fresh, &self.cap_fresh, self.n_fresh + 1, sizeof(QEntry)) != 0:
            return -1
        self.fresh[self.n_fresh] = e
        self.n_fresh += 1
        # Does an older queued job see this arrival? Then incremental passes are off.
        if self.backfill == BF_CONSERVATIVE:
            if pos != self.q_end - 1:
                self.need_full_pass = 1
        elif self.head_idx < 0 or _qcmp(&e, &self.head_entry) < 0:
            self.need_full_pass = 1
        return 0

    cpdef int finish(self, int j, int64_t now) except -1:
        """A running job ended (completed, failed, killed): release its resources."""
        self._check_idx(j)
        if self.job_state[j] != JS_RUNNING:
            raise ValueError(f"job slot {j} is not running")
        self._release(j)
        self.job_state[j] = JS_ENDED
        self.end_s[j] = now
        return 0

    cpdef int cancel(self, int j, int64_t now) except -1:
        """Cancel a pending or running job. Returns the state it was in."""
        self._check_idx(j)
        cdef int was = self.job_state[j]
        cdef int pos
        if was == JS_RUNNING:
            self._release(j)
            self.end_s[j] = now
        elif was == JS_PENDING:
            pos = self._find_pos(j)
            self._tombstone(pos)
            if self.backfill == BF_CONSERVATIVE or j == self.head_idx:
                self.need_full_pass = 1
        elif was == JS_NEW or was == JS_HELD:
            pass
        else:
            raise ValueError(f"job slot {j} has already ended")
        self.job_state[j] = JS_CANCELLED
        return was

    def set_node_state(self, int node, int state):
        """Change a node's state; only UP nodes take new work or count as free."""
        if node < 0 or node >= self.n_nodes:
            raise IndexError(f"node {node} out of range")
        if state not in (NODE_UP, NODE_BOOTING, NODE_DRAINING, NODE_DOWN):
            raise ValueError(f"unknown node state {state}")
        cdef int r
        cdef int was_up = self.node_state[node] == NODE_UP
        cdef int is_up = state == NODE_UP
        if was_up != is_up:
            for r in range(N_RES):
                if is_up:
                    self.total_free[r] += self.node_free[node * N_RES + r]
                    self.total_cap[r] += self.node_cap[node * N_RES + r]
                else:
                    self.total_free[r] -= self.node_free[node * N_RES + r]
                    self.total_cap[r] -= self.node_cap[node * N_RES + r]
        self.node_state[node] = <int8_t>state
        if is_up and node < self.first_free_node:
            self.first_free_node = node
        self.need_full_pass = 1

    # ------------------------------------------------------------ queue internals

    cdef int _upper_bound(self, const QEntry* e) noexcept nogil:
        """First position in [q_begin, q_end) whose entry sorts after ``e``."""
        cdef int lo = self.q_begin, hi = self.q_end, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if _qcmp(&self.q[mid], e) <= 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int _find_pos(self, int j) noexcept nogil:
        """Queue position of pending job ``j`` (binary search, then equal keys)."""
        cdef QEntry e
        cdef int lo = self.q_begin, hi = self.q_end, mid
        self._entry_of(j, &e)
        while lo < hi:
            mid = (lo + hi) >> 1
            if _qcmp(&self.q[mid], &e) < 0:
                lo = mid + 1
            else:
                hi = mid
        while lo < self.q_end and self.q[lo].job_idx != j:
            lo += 1
        return lo

    cdef void _tombstone(self, int pos) noexcept nogil:
        self.q[pos].job_idx = -1
        self.n_tomb += 1
        self.n_pending -= 1
        while self.q_begin < self.q_end and self.q[self.q_begin].job_idx < 0:
            self.q_begin += 1
            self.n_tomb -= 1
        if self.q_begin == self.q_end:
            self.q_begin = 0
            self.q_end = 0
            self.n_tomb = 0

    cdef void _compact_queue(self) noexcept nogil:
        """Drop tombstones and move the live entries to the front (order kept)."""
        cdef int src, dst = 0
        for src in range(self.q_begin, self.q_end):
            if self.q[src].job_idx >= 0:
                if dst != src:
                    self.q[dst] = self.q[src]
                dst += 1
        self.q_begin = 0
        self.q_end = dst
        self.n_tomb = 0

    cdef void _rekey_queue(self) noexcept nogil:
        """Recompute every live entry's key and sort (after an order or priority change)."""
        cdef int p
        self._compact_queue()
        for p in range(self.q_end):
            self._entry_of(self.q[p].job_idx, &self.q[p])
        qsort(self.q, self.q_end, sizeof(QEntry), _qsort_cmp)
        self.need_full_pass = 1

    # ------------------------------------------------------------ running set

    cdef int _run_insert(self, int j) noexcept nogil:
        cdef RunEntry e
        cdef int lo = 0, hi = self.n_run, mid
        e.end_req_s = self.start_s[j] + self.jobs[j].walltime_s
        e.job_idx = j
        e._pad = 0
        if _reserve(<void**>&self.run, &self.cap_run, self.n_run + 1, sizeof(RunEntry)) != 0:
            return -1
        while lo < hi:
            mid = (lo + hi) >> 1
            if (self.run[mid].end_req_s < e.end_req_s or
                    (self.run[mid].end_req_s == e.end_req_s and self.run[mid].job_idx < j)):
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n_run:
            memmove(&self.run[lo + 1], &self.run[lo], (self.n_run - lo) * sizeof(RunEntry))
        self.run[lo] = e
        self.n_run += 1
        return 0

    cdef void _run_remove(self, int j) noexcept nogil:
        cdef int64_t t = self.start_s[j] + self.jobs[j].walltime_s
        cdef int lo = 0, hi = self.n_run, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if (self.run[mid].end_req_s < t or
                    (self.run[mid].end_req_s == t and self.run[mid].job_idx < j)):
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n_run - 1:
            memmove(&self.run[lo], &self.run[lo + 1], (self.n_run - lo - 1) * sizeof(RunEntry))
        self.n_run -= 1

    # ------------------------------------------------------------ placement

    cdef int _fits_now(self, int j) noexcept nogil:
        """Could job ``j`` start on the UP nodes right now?"""
        cdef int n, r
        cdef int64_t k, placeable = 0, per
        cdef JobSpec* s = &self.jobs[j]
        if not _ge(self.total_free, &self.need[j * N_RES]):
            return 0
        if self.simple[j]:
            return 1
        for n in range(self.first_free_node, self.n_nodes):
            if self.node_state[n] != NODE_UP:
                continue
            k = s.n_tasks
            for r in range(N_RES):
                per = s.per_task[r]
                if per > 0 and self.node_free[n * N_RES + r] // per < k:
                    k = self.node_free[n * N_RES + r] // per
            placeable += k
            if placeable >= s.n_tasks:
                return 1
        return 0

    cdef inline int64_t _tasks_fit(self, int n, JobSpec* s, int64_t most) noexcept nogil:
        """How many of ``s``'s tasks (at most ``most``) node ``n`` can take now."""
        cdef int r
        cdef int64_t k = most, per
        for r in range(N_RES):
            per = s.per_task[r]
            if per > 0 and self.node_free[n * N_RES + r] // per < k:
                k = self.node_free[n * N_RES + r] // per
        return k

    cdef int _take_on_node(self, JobSpec* s, int n, int64_t k) noexcept nogil:
        """Put ``k`` tasks on node ``n``: an allocation entry, less free there."""
        cdef int r
        if _reserve(<void**>&self.alloc, &self.cap_alloc, self.n_alloc + 1,
                    sizeof(AllocEntry)) != 0:
            return -1
        self.alloc[self.n_alloc].node_idx = n
        self.alloc[self.n_alloc].n_tasks = <int32_t>k
        self.n_alloc += 1
        for r in range(N_RES):
            self.node_free[n * N_RES + r] -= k * s.per_task[r]
            self.total_free[r] -= k * s.per_task[r]
        return 0

    cdef int _pick_node(self, JobSpec* s, int64_t rem, int64_t* k_out) noexcept nogil:
        """best_fit: the node left with the fewest free cores; spread: the node with
        the most free cores. Ties go to the lowest index. -1 if none can take a task."""
        cdef int n, best = -1
        cdef int64_t k, score, best_score = 0
        for n in range(self.first_free_node, self.n_nodes):
            if self.node_state[n] != NODE_UP:
                continue
            k = self._tasks_fit(n, s, rem)
            if k <= 0:
                continue
            if self.placement == PLACE_BEST_FIT:
                score = -(self.node_free[n * N_RES + RES_CORES] - k * s.per_task[RES_CORES])
            else:
                score = self.node_free[n * N_RES + RES_CORES]
            if best < 0 or score > best_score:
                best = n
                best_score = score
                k_out[0] = k
        return best

    cdef int _start(self, int j, int64_t now) noexcept nogil:
        """Place job ``j`` by the placement strategy and record the decision.

        The caller checked _fits_now. first_fit takes nodes in index order;
        best_fit (pack) and spread (balance) choose node by node.
        """
        cdef int n
        cdef int64_t k, rem = self.jobs[j].n_tasks
        cdef JobSpec* s = &self.jobs[j]
        cdef int off = self.n_alloc
        if self.placement == PLACE_FIRST_FIT:
            for n in range(self.first_free_node, self.n_nodes):
                if rem == 0:
                    break
                if self.node_state[n] != NODE_UP:
                    continue
                k = self._tasks_fit(n, s, rem)
                if k <= 0:
                    continue
                if self._take_on_node(s, n, k) != 0:
                    return -1
                rem -= k
        else:
            while rem > 0:
                n = self._pick_node(s, rem, &k)
                if n < 0:
                    return -1
                if self._take_on_node(s, n, k) != 0:
                    return -1
                rem -= k
        self.alloc_off[j] = off
        self.alloc_cnt[j] = self.n_alloc - off
        self.live_alloc += self.n_alloc - off
        while (self.first_free_node < self.n_nodes and
               (self.node_state[self.first_free_node] != NODE_UP or
                self.node_free[self.first_free_node * N_RES + RES_CORES] <= 0)):
            self.first_free_node += 1
        self.job_state[j] = JS_RUNNING
        self._count_user(j, 1)
        self.start_s[j] = now
        self.reserved_s[j] = -1
        if self._run_insert(j) != 0:
            return -1
        if _reserve(<void**>&self.started, &self.cap_started, self.n_started + 1,
                    sizeof(int32_t)) != 0:
            return -1
        self.started[self.n_started] = j
        self.n_started += 1
        return 0

    cdef void _release(self, int j) noexcept nogil:
        cdef int a, n, r
        cdef int64_t k
        for a in range(self.alloc_off[j], self.alloc_off[j] + self.alloc_cnt[j]):
            n = self.alloc[a].node_idx
            k = self.alloc[a].n_tasks
            for r in range(N_RES):
                self.node_free[n * N_RES + r] += k * self.jobs[j].per_task[r]
                if self.node_state[n] == NODE_UP:
                    self.total_free[r] += k * self.jobs[j].per_task[r]
            if n < self.first_free_node and self.node_state[n] == NODE_UP:
                self.first_free_node = n
        self.live_alloc -= self.alloc_cnt[j]
        self.alloc_cnt[j] = 0
        self._count_user(j, -1)
        self._run_remove(j)
        self.need_full_pass = 1
        if self.n_alloc > 4096 and self.n_alloc > 4 * self.live_alloc:
            self._compact_alloc()

    cdef void _compact_alloc(self) noexcept nogil:
        """Rewrite the allocation pool with only the running jobs' entries."""
        cdef int i, j, a, dst = 0
        cdef AllocEntry* tmp = <AllocEntry*>malloc(max(self.live_alloc, 1) * sizeof(AllocEntry))
        if tmp == NULL:
            return
        for i in range(self.n_run):
            j = self.run[i].job_idx
            for a in range(self.alloc_cnt[j]):
                tmp[dst + a] = self.alloc[self.alloc_off[j] + a]
            self.alloc_off[j] = dst
            dst += self.alloc_cnt[j]
        memcpy(self.alloc, tmp, dst * sizeof(AllocEntry))
        free(tmp)
        self.n_alloc = dst

    # ------------------------------------------------------------ the pass

    cpdef int schedule(self, int64_t now) except -2:
        """One scheduling pass at ``now``; returns how many jobs it started.

        The started slot indices are then in ``started_jobs()`` (or read by a
        feed), in the order the pass started them.
        """
        cdef int rc
        # A pass over a long queue lets other Python threads run (the live
        # agent's API); a short one keeps the GIL: dropping and retaking it
        # would cost more than the pass.
        cdef bint release = self.n_pending > 512
        self.n_started = 0
        if release:
            with nogil:
                rc = self._run_pass(now)
        else:
            rc = self._run_pass(now)
        self.n_passes += 1
        if rc != PASS_OK:
            raise MemoryError("scheduling pass ran out of memory")
        return self.n_started

    cdef int _run_pass(self, int64_t now) noexcept nogil:
        cdef int rc
        if self.backfill == BF_CONSERVATIVE:
            rc = self._pass_conservative(now)
        else:
            rc = self._pass_easy(now)
        self.need_full_pass = 0
        self.n_fresh = 0
        if self.n_tomb > 64 and self.n_tomb > self.n_pending:
            self._compact_queue()
        return rc

    cdef int _pass_easy(self, int64_t now) noexcept nogil:
        """FCFS-order starts, then (EASY) backfill around the head's reservation."""
        cdef int j, k, head_pos, examined = 0, pos
        if (not self.need_full_pass and self.head_idx >= 0 and self.bf_depth == 0
                and not self._limits_on() and self.job_state[self.head_idx] == JS_PENDING):
            # Only arrivals since the last pass, all behind the head: older jobs
            # failed then and still fail (no resources came back, time only moved
            # on), so only the newcomers are candidates, in queue order.
            if self.backfill == BF_NONE:
                return PASS_OK
            qsort(self.fresh, self.n_fresh, sizeof(QEntry), _qsort_cmp)
            for k in range(self.n_fresh):
                if self.total_free[RES_CORES] <= 0:
                    break
                j = self.fresh[k].job_idx
                if self.job_state[j] != JS_PENDING:
                    continue
                self.n_jobs_examined += 1
                if self._try_backfill(j, now, -1) != PASS_OK:
                    return PASS_NO_MEMORY
            return PASS_OK
        self.n_full_passes += 1
        head_pos = self._start_in_order(now, &examined)
        if head_pos == -2:
            return PASS_NO_MEMORY
        if head_pos >= 0:
            examined += 1
        self.n_jobs_examined += examined
        if head_pos < 0:
            self.head_idx = -1
            return PASS_OK
        self.head_idx = self.q[head_pos].job_idx
        self.head_entry = self.q[head_pos]
        if self.backfill == BF_NONE:
            return PASS_OK
        self._compute_shadow(self.head_idx, now)
        pos = head_pos + 1
        while pos < self.q_end:
            if self.total_free[RES_CORES] <= 0:
                break
            if self.bf_depth > 0 and examined >= self.bf_depth:
                break
            j = self.q[pos].job_idx
            if j >= 0:
                examined += 1
                self.n_jobs_examined += 1
                if not self._over_limit(j) and self._try_backfill(j, now, pos) != PASS_OK:
                    return PASS_NO_MEMORY
            pos += 1
        return PASS_OK

    cdef inline int _limits_on(self) noexcept nogil:
        return self.max_jobs_per_user > 0 or self.max_cores_per_user > 0

    cdef int _over_limit(self, int j) noexcept nogil:
        """Would starting ``j`` exceed its user's running-jobs or cores cap?"""
        cdef int u = self.jobs[j].user_idx
        if u < 0 or u >= self.n_users:
            return 0
        if self.max_jobs_per_user > 0 and self.user_running[u] >= self.max_jobs_per_user:
            return 1
        if (self.max_cores_per_user > 0 and
                self.user_cores[u] + self.need[j * N_RES + RES_CORES] > self.max_cores_per_user):
            return 1
        return 0

    cdef void _count_user(self, int j, int sign) noexcept nogil:
        cdef int u = self.jobs[j].user_idx
        if 0 <= u < self.n_users:
            self.user_running[u] += sign
            self.user_cores[u] += sign * self.need[j * N_RES + RES_CORES]

    cdef int _start_in_order(self, int64_t now, int* examined) noexcept nogil:
        """Start queued jobs in order while they fit, passing over jobs a limit holds back.

        Returns the queue position of the first job that does not fit (not
        counted in ``examined``), -1 when every job was started or passed
        over, -2 when out of memory.
        """
        cdef int pos = self.q_begin, j
        while pos < self.q_end:
            j = self.q[pos].job_idx
            if j < 0:
                pos += 1
                continue
            if self._over_limit(j):  # passed over: never the head, never reserved
                examined[0] += 1
                self.reserved_s[j] = -1
                pos += 1
                continue
            if not self._fits_now(j):
                return pos
            if self._start(j, now) != 0:
                return -2
            self._tombstone(pos)
            examined[0] += 1
            pos += 1
        return -1

    cdef int _try_backfill(self, int j, int64_t now, int pos) noexcept nogil:
        """Start ``j`` if it cannot delay the head's reservation (EASY rule)."""
        cdef int r
        cdef int64_t* need = &self.need[j * N_RES]
        cdef int before_shadow = (self.shadow_s == NEVER or
                                  now + self.jobs[j].walltime_s <= self.shadow_s)
        if not before_shadow and not _ge(self.extra, need):
            return PASS_OK
        if not self._fits_now(j):
            return PASS_OK
        if self._start(j, now) != 0:
            return PASS_NO_MEMORY
        self._tombstone(pos if pos >= 0 else self._find_pos(j))
        if not before_shadow:
            for r in range(N_RES):
                self.extra[r] -= need[r]
        return PASS_OK

    cdef void _compute_shadow(self, int head, int64_t now) noexcept nogil:
        """Shadow time: when running jobs' requested ends free enough for the head.

        extra = what is free at the shadow time beyond the head's need; a
        backfilled job that outlives the shadow time may use only that.
        """
        cdef int64_t avail[4]
        cdef int64_t t
        cdef int i = 0, r, j
        cdef int64_t* need = &self.need[head * N_RES]
        for r in range(N_RES):
            avail[r] = self.total_free[r]
        if _ge(avail, need):
            self.shadow_s = now
            for r in range(N_RES):
                self.extra[r] = avail[r] - need[r]
            return
        while i < self.n_run:
            t = self.run[i].end_req_s
            while i < self.n_run and self.run[i].end_req_s == t:
                j = self.run[i].job_idx
                for r in range(N_RES):
                    avail[r] += self.need[j * N_RES + r]
                i += 1
            if _ge(avail, need):
                self.shadow_s = t if t > now else now
                for r in range(N_RES):
                    self.extra[r] = avail[r] - need[r]
                return
        self.shadow_s = NEVER
        for r in range(N_RES):
            self.extra[r] = 0

    # ------------------------------------------------------------ conservative

    cdef int _pass_conservative(self, int64_t now) noexcept nogil:
        """Every queued job, in order, takes the earliest slot of the profile."""
        cdef int pos, j, k, examined = 0
        if (not self.need_full_pass and self.resv_complete and self.prof.n_blocks > 0
                and self.bf_depth == 0 and self.min_resv_s > now and not self._limits_on()
                and prof_second_time(&self.prof) > now):
            # Only tail arrivals: every older reservation stands; add theirs.
            prof_set_first_time(&self.prof, now)
            qsort(self.fresh, self.n_fresh, sizeof(QEntry), _qsort_cmp)
            for k in range(self.n_fresh):
                j = self.fresh[k].job_idx
                if self.job_state[j] != JS_PENDING:
                    continue
                self.n_jobs_examined += 1
                if self._reserve_or_start(j, now, -1) != PASS_OK:
                    return PASS_NO_MEMORY
            return PASS_OK
        self.n_full_passes += 1
        self.min_resv_s = NEVER
        self.last_pass_now = now
        self.resv_complete = 1
        if self._fill_suffix_min() != 0:
            return PASS_NO_MEMORY
        # Until a job fails to start, only starts have been made: free resources
        # can only grow with time (running jobs end, started ones end), so a job
        # that fits now fits for its whole walltime, as in EASY's first phase.
        # The profile is built at the first job that does not start, from the
        # running jobs, which by then include the ones just started: the same
        # profile a full rebuild gives.
        pos = self._start_in_order(now, &examined)
        self.n_jobs_examined += examined
        if pos == -2:
            return PASS_NO_MEMORY
        if pos == -1 or self.total_free[RES_CORES] < self.suffix_min[pos - self.q_begin]:
            # all started, or nothing more can start: no profile was needed (the
            # stored one is stale for incremental passes); reservations on demand
            self.resv_complete = 0
            return PASS_OK
        if self._build_profile(now) != 0:
            return PASS_NO_MEMORY
        while pos < self.q_end:
            j = self.q[pos].job_idx
            if j >= 0:
                if prof_free_now_cores(&self.prof) < self.suffix_min[pos - self.q_begin]:
                    # No job from here on fits in the cores free now, so none can
                    # start: the decisions are complete. Their reservations are
                    # computed only if someone asks (reservations, estimates).
                    self.resv_complete = 0
                    break
                examined += 1
                if self.bf_depth > 0 and examined > self.bf_depth:
                    self.resv_complete = 0
                    break
                self.n_jobs_examined += 1
                if self._over_limit(j):  # passed over: no reservation
                    self.reserved_s[j] = -1
                elif self._reserve_or_start(j, now, pos) != PASS_OK:
                    return PASS_NO_MEMORY
            pos += 1
        return PASS_OK

    cdef int _fill_suffix_min(self) noexcept nogil:
        """suffix_min[p - q_begin]: fewest cores any pending job at or after p asks for."""
        cdef int p, n = self.q_end - self.q_begin, j
        cdef int64_t m = NEVER
        if _reserve(<void**>&self.suffix_min, &self.cap_suffix, n + 1, sizeof(int64_t)) != 0:
            return -1
        for p in range(self.q_end - 1, self.q_begin - 1, -1):
            j = self.q[p].job_idx
            if j >= 0 and self.need[j * N_RES + RES_CORES] < m:
                m = self.need[j * N_RES + RES_CORES]
            self.suffix_min[p - self.q_begin] = m
        return 0

    cdef int _complete_reservations(self) noexcept nogil:
        """Reservations of every pending job as the last pass would have made them.

        Rebuilding at the last pass's time from the running jobs (which now
        include the ones that pass started) gives the profile that pass had;
        each pending job then takes its slot in queue order, starting nothing.
        """
        cdef int pos, j
        cdef int64_t s, now = self.last_pass_now
        if self._build_profile(now) != 0:
            return -1
        self.min_resv_s = NEVER
        for pos in range(self.q_begin, self.q_end):
            j = self.q[pos].job_idx
            if j < 0:
                continue
            s = prof_earliest(&self.prof, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
            if s == NEVER or self._over_limit(j):
                self.reserved_s[j] = -1
                continue
            self.reserved_s[j] = s
            if s < self.min_resv_s:
                self.min_resv_s = s
            if prof_take(&self.prof, s, s + self.jobs[j].walltime_s, &self.need[j * N_RES]) != 0:
                return -1
        self.resv_complete = 1
        return 0

    cdef int _reserve_or_start(self, int j, int64_t now, int pos) noexcept nogil:
        cdef int64_t s = prof_earliest(&self.prof, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
        if s == NEVER:
            self.reserved_s[j] = -1
            return PASS_OK
        if s == now and self._fits_now(j):
            if self._start(j, now) != 0:
                return PASS_NO_MEMORY
            self._tombstone(pos if pos >= 0 else self._find_pos(j))
        else:
            self.reserved_s[j] = s
            if s < self.min_resv_s:
                self.min_resv_s = s
        if prof_take(&self.prof, s, s + self.jobs[j].walltime_s, &self.need[j * N_RES]) != 0:
            return PASS_NO_MEMORY
        return PASS_OK

    cdef int _build_profile(self, int64_t now) noexcept nogil:
        """Free resources over time from the running jobs' requested ends."""
        cdef int i = 0, r, j
        cdef int64_t t
        cdef int64_t cur[4]
        prof_clear(&self.prof)
        for r in range(N_RES):
            cur[r] = self.total_free[r]
        # running jobs already past their requested end count as free now
        while i < self.n_run and self.run[i].end_req_s <= now:
            j = self.run[i].job_idx
            for r in range(N_RES):
                cur[r] += self.need[j * N_RES + r]
            i += 1
        if prof_append(&self.prof, now, cur) != 0:
            return -1
        while i < self.n_run:
            t = self.run[i].end_req_s
            while i < self.n_run and self.run[i].end_req_s == t:
                j = self.run[i].job_idx
                for r in range(N_RES):
                    cur[r] += self.need[j * N_RES + r]
                i += 1
            if prof_append(&self.prof, t, cur) != 0:
                return -1
        return 0

    # ------------------------------------------------------------ queries

    def estimate_start(self, int j, int64_t now):
        """Earliest start of pending job ``j`` from the reservation profile.

        Conservative keeps every reservation, so its answer is the job's own.
        Other modes walk the queue in order and give each job ahead of ``j`` a
        reservation, as Slurm's start estimate does. -1 if it never fits.
        """
        self._check_idx(j)
        cdef int pos, i
        cdef int64_t s
        if self.job_state[j] == JS_RUNNING or self.job_state[j] == JS_ENDED:
            return self.start_s[j]
        if self.job_state[j] != JS_PENDING:
            return -1
        if (self.backfill == BF_CONSERVATIVE and self.resv_complete and self.reserved_s[j] >= 0
                and not self.need_full_pass):
            return max(self.reserved_s[j], now)
        if self._build_profile(now) != 0:
            raise MemoryError()
        pos = self.q_begin
        while pos < self.q_end:
            i = self.q[pos].job_idx
            if i == j:
                break
            if i >= 0 and not self._over_limit(i):
                s = prof_earliest(&self.prof, &self.need[i * N_RES], self.jobs[i].walltime_s, now)
                if s != NEVER:
                    if prof_take(&self.prof, s, s + self.jobs[i].walltime_s,
                                          &self.need[i * N_RES]) != 0:
                        raise MemoryError()
            pos += 1
        s = prof_earliest(&self.prof, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
        # the profile arrays are shared with conservative passes: rebuild next time
        self.need_full_pass = 1
        return -1 if s == NEVER else s

    def why_pending(self, int j):
        """Reason code (REASONS) for a job that is not running."""
        self._check_idx(j)
        cdef int pos
        if self.job_state[j] == JS_HELD:
            return WHY_HELD
        if self.job_state[j] != JS_PENDING:
            return WHY_NOT_PENDING
        if self._over_limit(j):
            return WHY_USER_LIMIT
        pos = self.q_begin  # the first job in line that no limit holds back
        while pos < self.q_end and (self.q[pos].job_idx < 0 or self._over_limit(self.q[pos].job_idx)):
            pos += 1
        if pos < self.q_end and self.q[pos].job_idx == j:
            return WHY_RESOURCES
        return WHY_PRIORITY

    def started_jobs(self):
        """Slot indices started by the last pass, in start order (a copy)."""
        out = np.empty(self.n_started, dtype=np.int32)
        cdef int32_t[::1] v = out
        cdef int k
        for k in range(self.n_started):
            v[k] = self.started[k]
        return out

    def pending_jobs(self):
        """Slot indices of the pending jobs in queue order (a copy)."""
        out = np.empty(self.n_pending, dtype=np.int32)
        cdef int32_t[::1] v = out
        cdef int p, k = 0
        for p in range(self.q_begin, self.q_end):
            if self.q[p].job_idx >= 0:
                v[k] = self.q[p].job_idx
                k += 1
        return out

    def job_allocation(self, int j):
        """(node_idx, n_tasks) arrays of a running job's placement."""
        self._check_idx(j)
        cdef int a, c = self.alloc_cnt[j], off = self.alloc_off[j]
        nodes = np.empty(c, dtype=np.int32)
        tasks = np.empty(c, dtype=np.int32)
        cdef int32_t[::1] vn = nodes
        cdef int32_t[::1] vt = tasks
        for a in range(c):
            vn[a] = self.alloc[off + a].node_idx
            vt[a] = self.alloc[off + a].n_tasks
        return nodes, tasks

    def _copy_i64(self, int which):
        out = np.empty(self.n_jobs, dtype=np.int64)
        cdef int64_t[::1] v = out
        cdef int64_t* src = self.start_s if which == 0 else (self.end_s if which == 1 else self.reserved_s)
        if self.n_jobs:
            memcpy(&v[0], src, self.n_jobs * sizeof(int64_t))
        return out

    def start_times(self):
        """Start time per job slot, -1 if never started (a copy)."""
        return self._copy_i64(0)

    def end_times(self):
        """End time per job slot, -1 if not ended (a copy)."""
        return self._copy_i64(1)

    def reservations(self):
        """Conservative reservation per slot as of the last pass, -1 none (a copy)."""
        if self.backfill == BF_CONSERVATIVE and not self.resv_complete:
            if self._complete_reservations() != 0:
                raise MemoryError()
        return self._copy_i64(2)

    def job_states(self):
        out = np.empty(self.n_jobs, dtype=np.int8)
        cdef int8_t[::1] v = out
        if self.n_jobs:
            memcpy(&v[0], self.job_state, self.n_jobs * sizeof(int8_t))
        return out

    def free_per_node(self):
        """Free resources per node, shape (n_nodes, N_RES) (a copy)."""
        out = np.empty((self.n_nodes, N_RES), dtype=np.int64)
        cdef int64_t[:, ::1] v = out
        if self.n_nodes:
            memcpy(&v[0, 0], self.node_free, self.n_nodes * N_RES * sizeof(int64_t))
        return out

    def states_of_nodes(self):
        out = np.empty(self.n_nodes, dtype=np.int8)
        cdef int8_t[::1] v = out
        if self.n_nodes:
            memcpy(&v[0], self.node_state, self.n_nodes * sizeof(int8_t))
        return out

    def free_total(self):
        return np.array([self.total_free[r] for r in range(N_RES)], dtype=np.int64)

    def shadow(self):
        """EASY: (head slot, shadow time, extra resources) of the last full pass."""
        return (self.head_idx, None if self.shadow_s == NEVER else self.shadow_s,
                np.array([self.extra[r] for r in range(N_RES)], dtype=np.int64))


# ---------------------------------------------------------------- replay feed

cdef class ReplayFeed:
    """Arrivals and completions of a trace replay, for one SimPy driver process.

    The simulator knows what the kernel must not: each job's actual run time.
    This feed keeps the arrival cursor and a binary heap of completion times
    (ties by slot index) in C, so that a step of the simulation is a handful
    of calls whatever the queue length.
    """

    cdef int n
    cdef public int cursor  # slots below it have arrived
    cdef int64_t* submit
    cdef int64_t* duration
    cdef int64_t* h_t
    cdef int32_t* h_j
    cdef int h_n
    cdef int h_cap
    cdef public long long n_events

    def __cinit__(self, const int64_t[::1] submit_s, const int64_t[::1] duration_s):
        cdef Py_ssize_t k
        if submit_s.shape[0] != duration_s.shape[0]:
            raise ValueError("submit_s and duration_s must have the same length")
        self.n = <int>submit_s.shape[0]
        self.submit = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.duration = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        if self.submit == NULL or self.duration == NULL:
            raise MemoryError()
        for k in range(self.n):
            if k > 0 and submit_s[k] < submit_s[k - 1]:
                raise ValueError(f"submit times must be sorted (slot {k})")
            self.submit[k] = submit_s[k]
            self.duration[k] = duration_s[k]
        self.cursor = 0

    def __dealloc__(self):
        free(self.submit); free(self.duration); free(self.h_t); free(self.h_j)

    cpdef int64_t next_time(self):
        """Time of the next arrival or completion; -1 when the replay is over."""
        cdef int64_t t = NEVER
        if self.cursor < self.n:
            t = self.submit[self.cursor]
        if self.h_n > 0 and self.h_t[0] < t:
            t = self.h_t[0]
        return -1 if t == NEVER else t

    cdef int _apply(self, ClusterState state, int64_t now) except -1:
        """Completions due at ``now``, then arrivals at ``now``, into the state."""
        cdef int j, count = 0
        while self.h_n > 0 and self.h_t[0] <= now:
            j = self._pop()
            state.finish(j, now)
            count += 1
        while self.cursor < self.n and self.submit[self.cursor] <= now:
            if state._submit(self.cursor) != 0:
                raise MemoryError()
            self.cursor += 1
            count += 1
        self.n_events += count
        return count

    cpdef int64_t step(self, ClusterState state, int64_t now) except -2:
        """One simulation step at ``now``: events, one pass, completions of the
        jobs it started. Returns the next event time (-1: the replay is over)."""
        self._apply(state, now)
        state.schedule(now)
        self._record_starts(state, now)
        return self.next_time()

    cdef int _record_starts(self, ClusterState state, int64_t now) except -1:
        """Schedule the completion of every job the last pass started."""
        cdef int k, j
        for k in range(state.n_started):
            j = state.started[k]
            if self._push(now + self.duration[j], j) != 0:
                raise MemoryError()
        return state.n_started

    cdef int _push(self, int64_t t, int32_t j) noexcept nogil:
        cdef int i, parent, cap = self.h_cap
        if _reserve(<void**>&self.h_t, &cap, self.h_n + 1, sizeof(int64_t)) != 0:
            return -1
        cap = self.h_cap
        if _reserve(<void**>&self.h_j, &cap, self.h_n + 1, sizeof(int32_t)) != 0:
            return -1
        self.h_cap = cap
        i = self.h_n
        self.h_n += 1
        while i > 0:
            parent = (i - 1) >> 1
            if self.h_t[parent] < t or (self.h_t[parent] == t and self.h_j[parent] < j):
                break
            self.h_t[i] = self.h_t[parent]
            self.h_j[i] = self.h_j[parent]
            i = parent
        self.h_t[i] = t
        self.h_j[i] = j
        return 0

    cdef int32_t _pop(self) noexcept nogil:
        cdef int32_t top = self.h_j[0]
        cdef int64_t t
        cdef int32_t j
        cdef int i = 0, c
        self.h_n -= 1
        if self.h_n == 0:
            return top
        t = self.h_t[self.h_n]
        j = self.h_j[self.h_n]
        while True:
            c = 2 * i + 1
            if c >= self.h_n:
                break
            if c + 1 < self.h_n and (self.h_t[c + 1] < self.h_t[c] or
                                     (self.h_t[c + 1] == self.h_t[c] and self.h_j[c + 1] < self.h_j[c])):
                c += 1
            if self.h_t[c] > t or (self.h_t[c] == t and self.h_j[c] > j):
                break
            self.h_t[i] = self.h_t[c]
            self.h_j[i] = self.h_j[c]
            i = c
        self.h_t[i] = t
        self.h_j[i] = j
        return top
